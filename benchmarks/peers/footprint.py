"""Start-up and footprint: ``import`` time and an idle worker's memory, workq against peers.

    python -m benchmarks.peers.footprint [--reps 10]

Import time is the wall time of ``python -c "import X"`` less that of ``python -c pass``
(median of ``--reps`` runs, interleaved). Idle RSS is the resident memory of a process
consuming an empty quorum queue on a local RabbitMQ node, 3 s after it is ready.
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


def import_times(reps: int) -> dict[str, float]:
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
    return {n: statistics.median(v) - interp for n, v in samples.items() if v}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle_rss(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, code in WORKERS.items():
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
                continue
            time.sleep(3.0)
            out[name] = rss_mib(proc.pid)
        finally:
            proc.kill()
            proc.wait(10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    times = import_times(args.reps)
    ref = times["workq"]
    print(f"import time, wall net of the interpreter, median of {args.reps}")
    for name, t in times.items():
        print(f"  {name:<22} {t * 1000:7.1f} ms  ({t / ref:.2f}x workq)")
    from workq.testing.brokers.rabbitmq import start_local

    proc = start_local(Path(tempfile.mkdtemp(prefix="workq-footprint-")))
    try:
        rss = idle_rss(proc.url)
    finally:
        proc.stop()
    print("idle worker RSS on RabbitMQ")
    for name, mib in rss.items():
        print(f"  {name:<22} {mib:7.1f} MiB")


if __name__ == "__main__":
    main()
