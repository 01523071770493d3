"""Start-up and footprint: ``import`` time and an idle worker's memory, workq against peers.

    python -m benchmarks.peers.footprint [--reps 10] [--rss-reps 3] [--url amqp://...]

workq's bytecode is written first, as installing it would. Import time is the wall time
of ``python -c "import X"`` less that of ``python -c pass`` (median of ``--reps`` runs,
interleaved; the range in brackets). Idle RSS is the resident memory of a process
consuming an empty quorum queue on a local RabbitMQ node (or the one ``--url`` names),
3 s after it is ready: median and range of ``--rss-reps`` interleaved runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORTS = {
    "workq": "import workq",
    "workq (sync connect)": "import workq; workq.connect",
    "dramatiq": "import dramatiq",
    "kombu": "import kombu; import kombu.connection",
    "celery": "import celery",
    "faststream": "import faststream.rabbit",
    "taskiq": "import taskiq_aio_pika",
}

WORKERS = {
    "workq": """
import sys, workq
broker = workq.connect(sys.argv[1])
def handle(d): pass
w = broker.worker("{q}", handle, concurrency=1)
print("ready", flush=True)
w.run()
""",
    "dramatiq": """
import sys, dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
broker = RabbitmqBroker(url=sys.argv[1].rstrip("/"), confirm_delivery=True)
dramatiq.set_broker(broker)
@dramatiq.actor(queue_name="{q}")
def job(x): pass
w = dramatiq.Worker(broker, worker_threads=1)
w.start()
print("ready", flush=True)
import time
time.sleep(3600)
""",
    "kombu": """
import sys
from kombu import Connection, Queue
with Connection(sys.argv[1]) as conn:
    q = Queue("{q}", durable=True, queue_arguments={{"x-queue-type": "quorum"}})
    with conn.Consumer(q, on_message=lambda m: m.ack(), prefetch_count=1):
        print("ready", flush=True)
        while True:
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:
                pass
""",
}


def wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def import_times(reps: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in IMPORTS}
    base: list[float] = []
    for _ in range(reps):
        base.append(wall("pass"))
        for name, code in IMPORTS.items():
            try:
                samples[name].append(wall(code))
            except subprocess.CalledProcessError:
                samples[name] = []
    interp = statistics.median(base)
    return {n: [t - interp for t in v] for n, v in samples.items() if v}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle_rss(url: str, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in WORKERS}
    for _ in range(reps):  # interleaved, like the import times: load drifts over a run
        for name, samples in out.items():
            mib = idle_rss_once(url, name)
            if mib is not None:
                samples.append(mib)
    return {name: samples for name, samples in out.items() if samples}


def idle_rss_once(url: str, name: str) -> float | None:
    """RSS of one idle worker of ``name``; ``None`` if it never got ready."""
    code = WORKERS[name]
    q = f"idle{name}{int(time.time() * 1000)}"
    proc = subprocess.Popen(
        [sys.executable, "-c", code.format(q=q), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            return None
        time.sleep(3.0)
        return rss_mib(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)


def compile_workq() -> None:
    """Write workq's bytecode, as installing a wheel does: a source checkout run with
    ``PYTHONDONTWRITEBYTECODE`` (or a read-only tree) otherwise compiles every module in
    each measured process (the peers, installed by pip, load theirs), which adds
    hundreds of ms to workq's import and about 1 MiB to its worker's RSS."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("workq")
    assert spec is not None and spec.origin is not None
    compileall.compile_dir(Path(spec.origin).parent, quiet=1)


def spread(samples: list[float], scale: float, unit: str) -> str:
    """``median unit [min-max]``."""
    med = statistics.median(samples) * scale
    return f"{med:7.1f} {unit} [{min(samples) * scale:.1f}-{max(samples) * scale:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--rss-reps", type=int, default=3)
    parser.add_argument("--url", help="a running RabbitMQ node (default: start a local one)")
    args = parser.parse_args()
    compile_workq()
    times = import_times(args.reps)
    ref = statistics.median(times["workq"])
    print(f"import time, wall net of the interpreter, median [range] of {args.reps}")
    for name, t in times.items():
        ratio = statistics.median(t) / ref
        print(f"  {name:<22} {spread(t, 1000, 'ms')}  ({ratio:.2f}x workq)")
    if args.url:
        rss = idle_rss(args.url, args.rss_reps)
    else:
        from workq.testing.brokers.rabbitmq import start_local

        proc = start_local(Path(tempfile.mkdtemp(prefix="workq-footprint-")))
        try:
            rss = idle_rss(proc.url, args.rss_reps)
        finally:
            proc.stop()
    print(f"idle worker RSS on RabbitMQ, median [range] of {args.rss_reps}")
    for name, mib in rss.items():
        print(f"  {name:<22} {spread(mib, 1, 'MiB')}")


if __name__ == "__main__":
    main()
