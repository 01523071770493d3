"""The peer benchmark's runner: brokers, interleaved repetitions, medians, ratios.

    python -m benchmarks.peers [--broker rabbitmq|kafka|sqs ...] [--path P ...] [--reps R] [--quick]

Each broker is the one in ``WORKQ_TEST_<NAME>_URL`` if set, else started with the test
launchers (``workq.testing.brokers``). Within each repetition, paths run in order and
the peers of a path in a shuffled order, so drift on a busy machine spreads over all.
A peer that cannot be imported is reported as such, and a path it has no API for is
shown as "n/a" with the reason.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from .common import PATHS, Ctx, NotApplicable
from .workq_peers import workq_aio, workq_sync

Adapter = Callable[[str, Ctx], float]

#: Which libraries each peer needs, to say plainly when one is not installed.
NEEDS = {
    "kombu": ["kombu"],
    "celery": ["celery"],
    "dramatiq": ["dramatiq", "pika"],
    "faststream": ["faststream", "aio_pika"],
    "taskiq": ["taskiq", "taskiq_aio_pika"],
    "faststream-aiokafka": ["faststream", "aiokafka"],
    "faststream-confluent": ["faststream", "confluent_kafka"],
    "confluent-kafka": ["confluent_kafka"],
    "aiokafka": ["aiokafka"],
    "kombu-sqs": ["kombu", "boto3", "pycurl"],
    "boto3": ["boto3"],
}
VERSIONS = [
    "workq",
    "kombu",
    "celery",
    "dramatiq",
    "faststream",
    "taskiq",
    "taskiq-aio-pika",
    "aio-pika",
    "pika",
    "aiokafka",
    "confluent-kafka",
    "boto3",
    "moto",
]


@contextmanager
def started(name: str) -> Iterator[tuple[str, dict[str, str]]]:
    url = os.environ.get(f"WORKQ_TEST_{name.upper()}_URL")
    if url:
        yield url, {}
        return
    launcher = importlib.import_module(f"workq.testing.brokers.{name}")
    proc = launcher.start_local(Path(tempfile.mkdtemp(prefix=f"workq-peers-{name}-")))
    info = {k: str(v) for k, v in proc.info.items()}
    try:
        yield proc.url, info
    finally:
        proc.stop()


def missing(peer: str) -> str | None:
    for module in NEEDS.get(peer, []):
        try:
            importlib.import_module(module)
        except Exception as exc:
            return f"not installed ({module}: {exc.__class__.__name__}: {exc})"
    return None


def run_broker(
    name: str, reps: int, n: int, n_single: int, only: list[str] | None = None
) -> list[str]:
    module = importlib.import_module(f"benchmarks.peers.{name}")
    peers: dict[str, Adapter] = {"workq": workq_sync, "workq.aio": workq_aio, **module.PEERS}
    paths: list[str] = [p for p in module.PATHS if not only or p in only]
    results: dict[tuple[str, str], list[float]] = {}
    notes: dict[tuple[str, str], str] = {}
    failures: dict[tuple[str, str], str] = {}
    failed: dict[tuple[str, str], int] = {}
    unavailable = {p: why for p in peers if (why := missing(p)) is not None}
    with started(name) as (url, info):
        ctx = Ctx(url=url, n=n, n_single=n_single, info=info)
        if hasattr(module, "prepare"):
            module.prepare(ctx)
        for rep in range(reps):
            for path in paths:
                order = [p for p in peers if p not in unavailable]
                random.shuffle(order)
                for peer in order:
                    key = (path, peer)
                    if key in notes:
                        continue
                    try:
                        value = peers[peer](path, ctx)
                    except NotApplicable as exc:
                        notes[key] = f"n/a: {exc}"
                        continue
                    except Exception as exc:
                        failures.setdefault(key, f"{exc.__class__.__name__}: {exc}"[:160])
                        failed[key] = failed.get(key, 0) + 1
                        if os.environ.get("WORKQ_PEERS_DEBUG"):
                            traceback.print_exc()
                        continue
                    results.setdefault(key, []).append(value)
                    print(
                        f"  [{name} rep {rep + 1}/{reps}] {path:<15} {peer:<21} {value:>10.3f}",
                        file=sys.stderr,
                        flush=True,
                    )
    for key, first in failures.items():
        notes[key] = f"failed {failed[key]} of {reps} runs: {first}"
    return table(name, peers, paths, results, notes, unavailable, getattr(module, "NOTES", {}))


def table(
    broker: str,
    peers: dict[str, Adapter],
    paths: list[str],
    results: dict[tuple[str, str], list[float]],
    notes: dict[tuple[str, str], str],
    unavailable: dict[str, str],
    peer_notes: dict[str, str],
) -> list[str]:
    lines = [f"### {broker}", ""]
    lines.append("| path | library | median | range | vs best peer |")
    lines.append("|---|---|---|---|---|")
    for path in paths:
        spec = PATHS[path]
        medians = {p: statistics.median(v) for (q, p), v in results.items() if q == path}
        others = {p: m for p, m in medians.items() if not p.startswith("workq")}
        best = (max if spec.higher_is_better else min)(others.values()) if others else None
        for peer in peers:
            key = (path, peer)
            if peer in unavailable:
                continue
            if key in results:
                values = results[key]
                med = medians[peer]
                if best is None or best == 0 or med == 0:
                    ratio = "-"
                else:
                    ratio = f"{(med / best) if spec.higher_is_better else (best / med):.2f}x"
                span = f"{min(values):.3g}-{max(values):.3g}"
                lines.append(f"| {path} ({spec.unit}) | {peer} | {med:.3g} | {span} | {ratio} |")
                if key in notes:
                    lines.append(f"| {path} ({spec.unit}) | {peer} | {notes[key]} | | |")
            elif key in notes and not notes[key].startswith("n/a"):
                lines.append(f"| {path} ({spec.unit}) | {peer} | {notes[key]} | | |")
    lines.append("")
    skipped = sorted({(p, n) for (q, p), n in notes.items() if n.startswith("n/a")})
    for peer, note in skipped:
        lines.append(f"- {peer}: {note}")
    for peer, why in unavailable.items():
        lines.append(f"- {peer}: {why}")
    for peer, note in peer_notes.items():
        lines.append(f"- {peer}: {note}")
    lines.append("")
    return lines


def versions() -> str:
    found = []
    for dist in VERSIONS:
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", action="append", choices=["rabbitmq", "kafka", "sqs"])
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (3)")
    parser.add_argument("--n", type=int, default=2000, help="messages per batch/consume run")
    parser.add_argument("--n-single", type=int, default=500, help="messages, single publish")
    parser.add_argument("--quick", action="store_true", help="1 repetition, small N")
    parser.add_argument(
        "--path", action="append", help="only this path (repeatable; default: every path)"
    )
    args = parser.parse_args()
    if args.quick:
        args.reps, args.n, args.n_single = 1, 300, 100
    brokers = args.broker or ["rabbitmq", "kafka", "sqs"]
    out = [
        f"Peer benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{args.reps} repetitions, N={args.n} (single publish {args.n_single}).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}.",
        f"Versions: {versions()}.",
        "Ratio: workq's median over the best other library's (>= 1.00x: workq as good or "
        "better, for times and counts too).",
        "",
    ]
    for broker in brokers:
        n = min(args.n, 200) if broker == "sqs" else args.n  # moto slows with depth
        try:
            out += run_broker(broker, args.reps, n, min(args.n_single, n), args.path)
        except Exception as exc:
            out += [f"### {broker}", "", f"broker could not run: {exc}", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
