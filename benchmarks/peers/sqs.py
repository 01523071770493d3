"""SQS peers: raw boto3 (batched) and kombu's SQS transport, on the same server.

API calls are counted at the server (moto logs one line per request), so every library
is counted the same way, including kombu, which sends some requests through pycurl.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .common import BODY, Countdown, Ctx, NotApplicable, fresh, rate

VISIBILITY = 2


def endpoint(ctx: Ctx) -> str:
    return parse_qs(urlsplit(ctx.url).query)["endpoint_url"][0]


def prepare(ctx: Ctx) -> None:
    log = ctx.info.get("log") or str(Path(ctx.info.get("workdir", ".")) / "moto.log")
    if "pid" in ctx.info:
        # The launcher logs to its workdir; find the file from the process's cwd.
        cwd = Path(f"/proc/{ctx.info['pid']}/cwd").resolve()
        log = str(cwd / "moto.log")
    if Path(log).exists():
        ctx.info["count_requests"] = log


def server_requests(ctx: Ctx) -> int:
    path = ctx.info.get("count_requests")
    if path is None:
        raise NotApplicable("no server log to count requests in (external SQS)")
    time.sleep(0.3)  # the server writes its access line after answering
    with open(path, "rb") as f:
        return sum(1 for line in f if b'"POST ' in line)


def client(ctx: Ctx) -> Any:
    import boto3

    return boto3.client("sqs", region_name=urlsplit(ctx.url).netloc, endpoint_url=endpoint(ctx))


def boto3_peer(path: str, ctx: Ctx) -> float:
    sqs = client(ctx)
    visibility = VISIBILITY if path == "long_handler" else 30
    url = sqs.create_queue(
        QueueName=fresh("bt"), Attributes={"VisibilityTimeout": str(visibility)}
    )["QueueUrl"]

    def publish(bodies: list[str]) -> None:
        for start in range(0, len(bodies), 10):
            chunk = bodies[start : start + 10]
            entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)

    def consume(n: int) -> None:
        done = 0
        while done < n:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if got:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ]
                sqs.delete_message_batch(QueueUrl=url, Entries=entries)
                done += len(got)

    body = BODY.decode()
    if path == "publish_batch":
        return rate(ctx.n, lambda: publish([body] * ctx.n))
    if path == "consume":
        publish([body] * ctx.n)
        return rate(ctx.n, lambda: consume(ctx.n))
    if path == "api_calls":
        before = server_requests(ctx)
        publish([body] * ctx.n)
        consume(ctx.n)
        return (server_requests(ctx) - before) / ctx.n
    if path == "long_handler":
        publish([f"job{i}" for i in range(4)])
        return _naive_long_handler(sqs, url)
    raise NotApplicable(path)


def _naive_long_handler(sqs: Any, url: str) -> float:
    """4 threads: receive one, run 5 s, delete; no visibility extension (the plain way)."""
    runs: Counter[str] = Counter()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
            for m in got.get("Messages", []):
                runs[m["Body"]] += 1
                time.sleep(5.0)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(10.0)
    stop.set()
    for t in threads:
        t.join(10)
    return sum(runs.values()) / 4


def kombu_peer(path: str, ctx: Ctx) -> float:
    from kombu import Connection, Queue

    name = fresh("ks")
    options = {
        "region": urlsplit(ctx.url).netloc,
        "sqs-endpoint": endpoint(ctx),  # not an option: kombu reads the endpoint from env
        "wait_time_seconds": 1,
        "visibility_timeout": VISIBILITY if path == "long_handler" else 30,
    }
    import os

    os.environ["AWS_ENDPOINT_URL_SQS"] = endpoint(ctx)
    options.pop("sqs-endpoint")
    conn_url = "sqs://"
    with Connection(conn_url, transport_options=options) as conn:
        queue = Queue(name)
        queue(conn.default_channel).declare()
        producer = conn.Producer()
        n = ctx.n

        def publish(bodies: list[bytes]) -> None:
            for b in bodies:
                producer.publish(
                    b,
                    routing_key=name,
                    content_type="application/octet-stream",
                    content_encoding="binary",
                )

        def consume(count: int, handle: Any = None, timeout: float = 120.0) -> None:
            done = Countdown(count)

            def on_message(message: Any) -> None:
                if handle is not None:
                    handle(message)
                message.ack()
                done.hit()

            with conn.Consumer(queue, on_message=on_message, prefetch_count=10):
                deadline = time.monotonic() + timeout
                while not done.done.is_set() and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=1)
            if not done.done.is_set():
                raise TimeoutError(f"kombu consumed {count - done.left} of {count}")

        if path == "publish_batch":
            return rate(n, lambda: publish([BODY] * n))
        if path == "consume":
            publish([BODY] * n)
            return rate(n, lambda: consume(n))
        if path == "api_calls":
            before = server_requests(ctx)
            publish([BODY] * n)
            consume(n)
            return (server_requests(ctx) - before) / n
        if path == "long_handler":
            runs: Counter[bytes] = Counter()
            publish([f"job{i}".encode() for i in range(4)])

            def slow(message: Any) -> None:
                runs[message.body] += 1
                time.sleep(5.0)

            # Keep consuming past the 4th ack, so a redelivery shows up as a second run.
            with contextlib.suppress(TimeoutError):
                consume(8, slow, timeout=25.0)
            return sum(runs.values()) / 4
    raise NotApplicable(path)


PEERS = {"boto3": boto3_peer, "kombu-sqs": kombu_peer}
PATHS = ["publish_batch", "consume", "api_calls", "long_handler"]
NOTES = {"kombu-sqs": "one message per SendMessage (kombu has no batch send)"}
