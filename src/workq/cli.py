"""The ``workq`` command: run an app, publish, inspect queues and dead letters, move backlogs.

Every command takes ``--url`` (default: the ``WORKQ_URL`` environment variable).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from typer.exceptions import TyperException

from .app import App
from .backend_settings import redact_url
from .broker import connect
from .codec import CONTENT_TYPE
from .delivery import Delivery
from .errors import WorkqError
from .message import Message

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["cli", "dlq", "fail", "load_app", "main", "move", "publish", "queues", "run", "stats"]

F = TypeVar("F", bound=Callable[..., Any])


# rich is imported on first use, not at the top: `workq run` prints three plain lines and
# never draws a table, so an idle worker started from the command need not hold rich.
@functools.cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True) if stderr else Console()


def _out() -> Console:
    return _console(False)


def _err() -> Console:
    return _console(True)


def _note(line: str) -> None:
    """A plain status line on stderr (no rich: see ``_console``)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def fail(message: str) -> None:
    """Print one error line on stderr (never a usage box or a traceback)."""
    from rich.markup import escape

    _err().print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)


class _OneLineErrors(typer.core.TyperGroup):
    """Click's usage errors (a bad option value, a missing argument, an unknown option)
    as one line on stderr and exit status 1, like every other error of the command."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except TyperException as exc:  # click's errors, as typer vendors them
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                _out().print(ctx.get_help(), highlight=False, markup=False)
                sys.exit(0)
            where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            fail(f"{exc.format_message()}{where}")
            sys.exit(1)
        except typer.Abort:
            fail("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


cli = typer.Typer(
    name="workq",
    help="Run workq apps and look after queues on any broker workq supports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_OneLineErrors,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="WORKQ_URL",
        help="Broker URL, e.g. sqlite:///var/lib/app/jobs.db (default: $WORKQ_URL).",
        show_envvar=True,
    ),
]


def _friendly(fn: F) -> F:
    """Turn workq's and the user's input errors into one clear line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (WorkqError, ValueError, TypeError, ImportError, ValidationError) as exc:
            fail(str(exc))
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def load_app(target: str) -> App:
    """The ``App`` named by ``module:attribute`` (``module`` alone means ``module:app``)."""
    module_name, _, attr = target.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules beside you are found
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ImportError(
                f"cannot import {module_name!r} for {target!r}: run from the directory that "
                "holds it, or make it importable (pip install -e .)"
            ) from exc
        raise
    found = getattr(module, attr, None)
    if not isinstance(found, App):
        raise ImportError(
            f"{target!r}: {module_name} has no workq.App named {attr!r} "
            f"(found {type(found).__name__}); use MODULE:APP"
        )
    return found


@cli.command()
@_friendly
def run(
    target: Annotated[str, typer.Argument(help="The app to run, as module:attribute.")],
    url: UrlOption = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Handler threads/tasks per queue (overrides).")
    ] = None,
    prefetch: Annotated[
        int | None, typer.Option(min=1, help="Unsettled deliveries held per queue (overrides).")
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="Logging level (if the app has not set up logging).")
    ] = "INFO",
    log_format: Annotated[
        str, typer.Option(help="text or json (if the app has not set up logging).")
    ] = "text",
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Serve Prometheus /metrics on this port."),
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Serve /livez and /readyz on this port."),
    ] = None,
    max_outage: Annotated[
        float | None,
        typer.Option(min=0, help="Exit after a broker outage this many seconds long."),
    ] = None,
) -> None:
    """Run every handler of an app until SIGTERM or Ctrl-C, then stop gracefully.

    Broker outages are ridden out (reconnecting with backoff) unless --max-outage bounds
    them. /readyz answers 200 only while every handler is connected and consuming.
    """
    from .logs import configure_logging

    if log_format not in ("text", "json"):
        raise ValueError(f"--log-format {log_format!r}: use text or json")
    app = load_app(target)  # first: the app may set up logging itself
    configure_logging(log_format, log_level)
    if max_outage is not None:
        app.max_outage = max_outage
    servers = _serve(app, metrics_port, health_port)
    where = redact_url(url) if url else (redact_url(app.url) if app.url else "$WORKQ_URL")
    queues = ", ".join(h.queue for h in app.handlers)
    _note(f"workq: running {target} ({queues}) on {where}; SIGTERM or Ctrl-C stops it")
    try:
        app.run(url, concurrency=concurrency, prefetch=prefetch)
    finally:
        for server in servers:
            server.close()
    _note("workq: stopped")


def _serve(app: App, metrics_port: int | None, health_port: int | None) -> list[Any]:
    """Start the HTTP endpoints asked for (one server when both ports are the same)."""
    if metrics_port is None and health_port is None:
        return []  # and http.server stays unloaded
    from .health import serve

    servers = []
    if metrics_port is not None:
        from .contrib.prometheus import Prometheus

        if not any(isinstance(m, Prometheus) for m in app.middleware):
            app.middleware = (*app.middleware, Prometheus())
    if metrics_port is not None and metrics_port == health_port:
        servers.append(serve(metrics_port, [app]))
    else:
        if metrics_port is not None:
            servers.append(serve(metrics_port, [app], health=False))
        if health_port is not None:
            servers.append(serve(health_port, [app], metrics=False))
    for server in servers:
        _note(f"workq: serving HTTP on port {server.port}")
    return servers


def _header(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise ValueError(f"--header {value!r}: write it as name=value")
    return key, val


@cli.command()
@_friendly
def publish(
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    body: Annotated[str, typer.Argument(help="Message body ('-' reads standard input).")],
    url: UrlOption = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant lane.")] = None,
    priority: Annotated[int, typer.Option(help="Priority (higher first).")] = 0,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="A header, name=value; repeatable.")
    ] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds before it may be delivered.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Parse BODY as JSON.")] = False,
    message_id: Annotated[str | None, typer.Option("--id", help="Message id to use.")] = None,
) -> None:
    """Publish one message and print its id once the broker has durably accepted it."""
    text = sys.stdin.read() if body == "-" else body
    payload: Any = text
    if as_json:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--json given but BODY is not JSON: {exc}") from None
    headers = dict(_header(h) for h in header or [])
    with connect(url) as broker:
        mid = broker.producer().publish(
            queue,
            payload,
            tenant=tenant,
            priority=priority,
            headers=headers,
            delay=delay,
            message_id=message_id,
        )
    _out().print(mid, highlight=False)


@cli.command()
@_friendly
def stats(
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    url: UrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Per lane: ready, in flight and delayed messages; and the dead letters."""
    with connect(url) as broker:
        s = broker.stats(queue)
    if as_json:
        _print_json(
            {
                "queue": s.queue,
                "ready": s.ready,
                "in_flight": s.in_flight,
                "delayed": s.delayed,
                "dead_letters": s.dead_letters,
                "lanes": [
                    {
                        "tenant": lane.lane.tenant,
                        "priority": lane.lane.priority,
                        "ready": lane.ready,
                        "in_flight": lane.in_flight,
                        "delayed": lane.delayed,
                    }
                    for lane in s.lanes
                ],
            }
        )
        return
    from rich.table import Table

    table = Table(title=f"queue {queue}", caption=f"dead letters: {s.dead_letters}")
    table.add_column("tenant")
    table.add_column("priority", justify="right")
    table.add_column("ready", justify="right")
    table.add_column("in flight", justify="right")
    table.add_column("delayed", justify="right")
    for lane in s.lanes:
        table.add_row(
            lane.lane.tenant or "(default)",
            str(lane.lane.priority),
            str(lane.ready),
            str(lane.in_flight),
            str(lane.delayed),
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        str(s.ready),
        str(s.in_flight),
        str(s.delayed),
    )
    _out().print(table)


def _print_json(data: Any) -> None:
    # Plain stdout, not rich: the output is for scripts (jq), with no wrapping or markup.
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


@cli.command()
@_friendly
def queues(
    url: UrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the broker's workq queues."""
    with connect(url) as broker:
        names = broker.queues()
    if as_json:
        _print_json(names)
    else:
        for name in names:
            _out().print(name, highlight=False)


def _preview(body: bytes, width: int = 60) -> str:
    text = body.decode(errors="replace")
    return text if len(text) <= width else text[: width - 1] + "…"


@cli.command()
@_friendly
def dlq(
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    url: UrlOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 20,
    redrive: Annotated[
        bool, typer.Option("--redrive", help="Move every dead letter back to the queue.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show a queue's dead letters with their reasons, or move them back (--redrive)."""
    with connect(url) as broker:
        if redrive:
            moved = broker.redrive(queue)
            if as_json:
                _print_json({"queue": queue, "moved": moved})
            else:
                _out().print(f"moved {moved} dead letter(s) back to {queue}")
            return
        dead = broker.dead_letters(queue, limit=limit)
        total = broker.stats(queue).dead_letters
    if as_json:
        _print_json(
            {
                "queue": queue,
                "total": total,
                "dead_letters": [
                    {
                        "id": d.id,
                        "tenant": d.tenant,
                        "priority": d.priority,
                        "attempt": d.attempt,
                        "reason": d.reason,
                        "headers": d.headers,
                        "enqueued_at": d.enqueued_at,
                        "body": d.body.decode(errors="replace"),
                    }
                    for d in dead
                ],
            }
        )
        return
    from rich.table import Table

    table = Table(title=f"dead letters of {queue}", caption=f"showing {len(dead)} of {total}")
    for name in ("id", "tenant", "priority", "attempt", "reason", "body"):
        table.add_column(name, overflow="fold")
    for d in dead:
        table.add_row(
            d.id,
            d.tenant or "",
            str(d.priority),
            str(d.attempt),
            d.reason,
            _preview(d.body),
        )
    _out().print(table)


@cli.command()
@_friendly
def move(
    queue: Annotated[str, typer.Argument(help="Queue name (the same on both brokers).")],
    source: Annotated[str, typer.Option("--from", help="URL of the broker to drain.")],
    target: Annotated[str, typer.Option("--to", help="URL of the broker to move to.")],
    prefetch: Annotated[int, typer.Option(min=1, help="Messages held at once.")] = 100,
    idle: Annotated[
        float, typer.Option(min=0.1, help="Stop after this many seconds with nothing to move.")
    ] = 2.0,
) -> None:
    """Move a queue's backlog to another broker, at least once.

    Each message is published to the target, which confirms it, before it is acked at
    the source; a crash in between leaves a duplicate, never a loss.
    """
    moved = _move(queue, source, target, prefetch=prefetch, idle=idle)
    _out().print(f"moved {moved} message(s) of {queue} to {redact_url(target)}")


def _copy(d: Delivery) -> Message:
    headers = dict(d.headers)
    headers.setdefault(CONTENT_TYPE, "application/octet-stream")
    return Message(d.body, tenant=d.tenant, priority=d.priority, headers=headers, message_id=d.id)


def _move(queue: str, source: str, target: str, *, prefetch: int, idle: float) -> int:
    # Here, not at the top: rich.progress costs memory that `workq run` never needs.
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    moved = 0
    with connect(source) as src, connect(target) as dst:
        total = src.stats(queue).ready
        progress = Progress(
            TextColumn(f"moving {queue}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=_err(),
        )
        with progress, src.consumer(queue, prefetch=prefetch) as consumer:
            task = progress.add_task("move", total=total or None)
            producer = dst.producer()
            last = time.monotonic()
            while time.monotonic() - last < idle:
                d = consumer.get(timeout=min(idle, 0.5))
                batch: list[Delivery] = []
                while d is not None:  # what is ready now, up to prefetch: one publish
                    batch.append(d)
                    d = consumer.get(timeout=0)
                if not batch:
                    continue
                producer.publish_many(queue, [_copy(d) for d in batch])
                for d in batch:
                    d.ack()  # only now: the target has confirmed the copies
                moved += len(batch)
                last = time.monotonic()
                if moved > total:
                    progress.update(task, total=moved)
                progress.update(task, completed=moved)
        left = src.stats(queue)
    delayed = left.delayed
    if left.in_flight or delayed:
        _err().print(
            f"note: {left.in_flight} in flight and {delayed} delayed message(s) remain at the "
            "source; run move again once they are ready"
        )
    return moved


def main() -> None:
    """Entry point of the ``workq`` command."""
    cli()


if __name__ == "__main__":
    main()
