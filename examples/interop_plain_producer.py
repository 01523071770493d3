"""Interop: a workq worker consumes a queue that a plain client feeds.

Another team's service knows nothing of workq. It makes the queue (or topic) `orders-…`
and sends JSON orders to it with its broker's own client (pika, boto3 or
confluent-kafka), each with a `source` header. A workq worker consumes that queue as it
is: the default lane of a workq queue is the broker object named as the queue, so
nothing has to be moved or renamed, and each delivery has an id, the body and the
headers the plain producer set (see docs/interop.md for the mapping per broker).

    WORKQ_URL=amqp://guest:guest@localhost:5672/ python examples/interop_plain_producer.py
    WORKQ_URL=kafka://localhost:9092 python examples/interop_plain_producer.py
    WORKQ_URL='sqs://us-east-1?endpoint_url=http://127.0.0.1:5000' \
        python examples/interop_plain_producer.py

It needs one of those brokers and its client (`pip install 'pyworkq[rabbitmq]'`,
`[sqs]` or `[kafka]`): SQLite and memory have no plain clients to interoperate with.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from _common import unique, wait_until, workers

import workq

ORDERS = [{"order": i, "amount": 10 * i} for i in range(1, 21)]
SOURCE = "legacy-billing"


def plain_rabbitmq(url: str, queue: str) -> None:
    """pika, as a service that has never heard of workq: its own classic queue."""
    import pika

    # The first host of a workq URL, without workq's options, is a URL pika reads.
    parts = urlsplit(url)
    conn = pika.BlockingConnection(
        pika.URLParameters(f"{parts.scheme}://{parts.netloc.split(',')[0]}{parts.path}")
    )
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    for order in ORDERS:
        props = pika.BasicProperties(
            content_type="application/json", headers={"source": SOURCE}, delivery_mode=2
        )
        ch.basic_publish("", queue, json.dumps(order).encode(), props)
    conn.close()


def plain_sqs(url: str, queue: str) -> None:
    """boto3: its own standard queue, a message attribute per header."""
    import boto3

    parts = urlsplit(url)
    endpoint = parse_qs(parts.query).get("endpoint_url", [None])[0]
    sqs = boto3.client("sqs", region_name=parts.netloc or None, endpoint_url=endpoint)
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    for order in ORDERS:
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=json.dumps(order),
            MessageAttributes={"source": {"DataType": "String", "StringValue": SOURCE}},
        )


def plain_kafka(url: str, queue: str) -> None:
    """confluent-kafka: its own topic of three partitions, records keyed by order."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    servers = {"bootstrap.servers": urlsplit(url).netloc}
    admin = AdminClient(servers)  # kept: a collected client fails its pending futures
    admin.create_topics([NewTopic(queue, 3, 1)])[queue].result(timeout=30)
    producer = Producer(servers)
    for order in ORDERS:
        producer.produce(
            queue,
            value=json.dumps(order).encode(),
            key=str(order["order"]).encode(),
            headers=[("source", SOURCE.encode())],
        )
    if producer.flush(30):
        raise SystemExit("the plain Kafka producer could not deliver every record")


PLAIN: dict[str, Callable[[str, str], None]] = {
    "amqp": plain_rabbitmq,
    "amqps": plain_rabbitmq,
    "sqs": plain_sqs,
    "kafka": plain_kafka,
}


def main() -> None:
    url = os.environ.get("WORKQ_URL", "")
    feed = PLAIN.get(url.split(":", 1)[0])
    if feed is None:
        raise SystemExit(
            "set WORKQ_URL to an amqp://, sqs:// or kafka:// broker: this example feeds a "
            "queue with that broker's own client"
        )
    queue = unique("orders")
    feed(url, queue)
    print(f"a plain client sent {len(ORDERS)} orders to {queue!r}")

    seen: dict[str, tuple[int, str | None]] = {}
    lock = threading.Lock()

    def handle(d: workq.Delivery) -> None:
        with lock:
            seen[d.id] = (d.json()["order"], d.headers.get("source"))

    with workq.connect(url) as broker:
        spec = broker.declare(queue, passive=True)  # there already: read it, make nothing
        print(f"adopted {spec.name!r} as it is (lease {spec.lease}s)")
        with workers(broker, queue, handle, 1, concurrency=4):
            wait_until(lambda: len(seen) >= len(ORDERS), 60, "every order")
    orders = sorted(order for order, _ in seen.values())
    print(f"consumed {len(seen)} of {len(ORDERS)} orders, each once: ", end="")
    print("yes" if orders == [o["order"] for o in ORDERS] else f"no: {orders}")
    print("ids set: " + ("yes" if all(seen) else "no"))
    print("headers kept: " + ("yes" if {s for _, s in seen.values()} == {SOURCE} else "no"))


if __name__ == "__main__":
    main()
