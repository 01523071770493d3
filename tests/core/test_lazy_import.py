"""``import workq`` stays light: heavy modules load when a name needing them is used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = [
    "asyncio",
    "workq.aio",
    "pydantic_settings",
    "workq.backends",
    "aio_pika",
    "pika",
    "boto3",
    "confluent_kafka",
]


def loaded_after(code: str, modules: list[str] = HEAVY) -> dict[str, bool]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    report = f"print(json.dumps({{m: m in sys.modules for m in {modules!r}}}))"
    probe = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    result: dict[str, bool] = json.loads(out.strip().splitlines()[-1])
    return result


def test_import_workq_loads_no_heavy_module() -> None:
    assert loaded_after("import workq") == dict.fromkeys(HEAVY, False)


def test_errors_and_version_need_no_lazy_import() -> None:
    loaded = loaded_after("import workq; workq.WorkqError; workq.Retry; workq.__version__")
    assert not any(loaded.values()), loaded


def test_sync_names_do_not_load_the_async_twin_or_clients() -> None:
    loaded = loaded_after(
        "import workq; workq.Message; workq.Delivery; workq.Producer; workq.Consumer; "
        "workq.Worker; workq.QueueSpec; workq.Lane"
    )
    assert not any(loaded.values()), loaded


def test_aio_is_reachable_from_import_workq_and_loads_on_use() -> None:
    assert loaded_after("import workq; workq.aio")["asyncio"] is False
    loaded = loaded_after("import workq; workq.aio.connect")
    assert loaded["workq.aio"] and loaded["asyncio"]
    for client in ("aio_pika", "pika", "boto3", "confluent_kafka"):
        assert not loaded[client], client


OTHER_BACKENDS = [
    f"workq.backends.{name}.settings" for name in ("sqlite", "rabbitmq", "sqs", "kafka")
]


def test_a_url_loads_its_own_backend_only_through_the_registry() -> None:
    # Built-in backends are found as installed ones are: by scheme, in the registry,
    # their settings class loaded on first use. Neither the others' settings nor
    # pydantic-settings (only workq.Settings needs it) nor asyncio comes along.
    code = "import workq; workq.connect('memory://').close()"
    watched = [*HEAVY, *OTHER_BACKENDS, "workq.backends.memory.settings", "workq._envsettings"]
    loaded = loaded_after(code, watched)
    assert loaded.pop("workq.backends") and loaded.pop("workq.backends.memory.settings")
    assert not any(loaded.values()), loaded


def test_parsing_a_url_loads_no_other_backend() -> None:
    code = "from workq.settings import parse_url; parse_url('sqs://eu-west-1')"
    loaded = loaded_after(code, [*OTHER_BACKENDS, "pydantic_settings", "boto3"])
    assert loaded.pop("workq.backends.sqs.settings")
    assert not any(loaded.values()), loaded


def test_settings_from_the_environment_name_any_registered_backend() -> None:
    code = (
        'import os; os.environ[\'WORKQ_BACKEND\'] = \'{"backend": "sqlite", "path": "x.db"}\'\n'
        "import workq; s = workq.Settings().resolve(); assert s.backend == 'sqlite', s"
    )
    loaded = loaded_after(code, ["pydantic_settings", *OTHER_BACKENDS])
    assert loaded["pydantic_settings"] and loaded["workq.backends.sqlite.settings"]
    assert not loaded["workq.backends.kafka.settings"]


def test_lazy_names_are_the_real_objects() -> None:
    import workq
    from workq.aio.broker import connect as aio_connect
    from workq.backends.kafka.settings import KafkaSettings
    from workq.broker import connect
    from workq.settings import KafkaSettings as Reexported
    from workq.settings import Settings

    assert workq.connect is connect
    assert workq.Settings is Settings
    assert Reexported is KafkaSettings
    assert workq.aio.connect is aio_connect
    assert {"connect", "aio", "Settings"} <= set(dir(workq))
    assert set(workq.__all__) <= set(dir(workq))


@pytest.mark.parametrize("module", ["workq", "workq.aio"])
def test_unknown_name_is_an_attribute_error_naming_it(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = mod.no_such_name


def test_star_import_gives_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from workq import *", namespace)
    import workq

    assert set(workq.__all__) <= set(namespace)


def test_the_cli_loads_no_asyncio_nor_progress_bars_before_it_needs_them() -> None:
    # `workq run` of a sync app: asyncio, pydantic-settings and rich's progress bars
    # (only `workq move` draws one) cost an idle worker memory for nothing.
    loaded = loaded_after(
        "import workq.cli, workq.app", ["asyncio", "pydantic_settings", "rich.progress"]
    )
    assert not any(loaded.values()), loaded
