"""Prometheus metrics for workq (extra ``workq[prometheus]``).

>>> from workq.contrib.prometheus import Prometheus
>>> broker = workq.connect(url, middleware=[Prometheus()])    # doctest: +SKIP

Metrics (labels ``queue`` and ``tenant``; the tenant label is capped, see ``max_tenants``):

- ``workq_messages_published_total``: messages the broker confirmed.
- ``workq_messages_processed_total{outcome}``: settlements, by outcome (ack, retry,
  dead_letter, release).
- ``workq_handler_duration_seconds``: time in the handler (histogram).
- ``workq_in_flight``: handlers running now.
- ``workq_queue_ready``: messages ready, from ``stats()`` every ``stats_interval`` seconds.
- ``workq_dead_letters``: messages in the dead-letter queue, from ``stats()``.
"""

from __future__ import annotations

import threading
from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError(
        "workq.contrib.prometheus needs prometheus-client: pip install 'pyworkq[prometheus]'",
        name=exc.name,
    ) from exc

from ..driver import QueueStats
from ..middleware import Middleware, ProcessContext, PublishContext, SettleContext

__all__ = ["OTHER", "Prometheus"]

#: The tenant label of tenants past the cap.
OTHER = "other"

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

_metrics: dict[int, dict[str, Any]] = {}
_metrics_lock = threading.Lock()


def _metrics_for(registry: CollectorRegistry) -> dict[str, Any]:
    """One set of metric objects per registry, shared by every Prometheus() using it."""
    with _metrics_lock:
        found = _metrics.get(id(registry))
        if found is None:
            labels = ("queue", "tenant")
            found = {
                "published": Counter(
                    "workq_messages_published_total",
                    "Messages published and confirmed by the broker.",
                    labels,
                    registry=registry,
                ),
                "processed": Counter(
                    "workq_messages_processed_total",
                    "Deliveries settled, by outcome (ack, retry, dead_letter, release).",
                    (*labels, "outcome"),
                    registry=registry,
                ),
                "duration": Histogram(
                    "workq_handler_duration_seconds",
                    "Seconds spent in the handler.",
                    labels,
                    buckets=_BUCKETS,
                    registry=registry,
                ),
                "in_flight": Gauge(
                    "workq_in_flight",
                    "Handlers running now.",
                    labels,
                    registry=registry,
                ),
                "ready": Gauge(
                    "workq_queue_ready",
                    "Messages ready for delivery (from stats(); Kafka: consumer lag).",
                    labels,
                    registry=registry,
                ),
                "dead": Gauge(
                    "workq_dead_letters",
                    "Messages in the queue's dead-letter queue (from stats()).",
                    ("queue",),
                    registry=registry,
                ),
            }
            _metrics[id(registry)] = found
        return found


class Prometheus(Middleware):
    """Counts, times and gauges workq's traffic into a Prometheus registry.

    :param registry: where the metrics live (default: prometheus_client's global one,
        which ``workq run --metrics-port`` serves).
    :param max_tenants: distinct tenant label values kept; later tenants are counted
        under ``"other"``, so a system with many tenants cannot explode the series count.
    :param stats_interval: seconds between refreshes of the queue gauges from
        ``stats()`` in each worker (``None`` turns them off).

    >>> Prometheus(max_tenants=20, stats_interval=30.0)   # doctest: +ELLIPSIS
    <workq.contrib.prometheus.Prometheus object at ...>
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_tenants: int = 50,
        stats_interval: float | None = 15.0,
    ) -> None:
        if isinstance(max_tenants, bool) or not isinstance(max_tenants, int) or max_tenants < 0:
            raise ValueError(f"max_tenants={max_tenants!r} must be an int >= 0")
        if stats_interval is not None and not stats_interval > 0:
            raise ValueError(f"stats_interval={stats_interval!r} must be > 0 seconds, or None")
        self.registry = registry if registry is not None else REGISTRY
        self.max_tenants = max_tenants
        self.stats_interval = stats_interval
        self._m = _metrics_for(self.registry)
        self._tenants: set[str] = set()
        self._lock = threading.Lock()

    def tenant_label(self, tenant: str | None) -> str:
        """The label value for ``tenant``: itself while under the cap, else ``"other"``."""
        if tenant is None:
            return ""
        if tenant in self._tenants:
            return tenant
        with self._lock:
            if len(self._tenants) < self.max_tenants:
                self._tenants.add(tenant)
                return tenant
        return OTHER

    def after_publish(self, ctx: PublishContext) -> None:
        if ctx.error is not None:
            return
        counts: dict[str, int] = {}
        for msg in ctx.messages:
            label = self.tenant_label(msg.lane.tenant)
            counts[label] = counts.get(label, 0) + 1
        for tenant, n in counts.items():
            self._m["published"].labels(ctx.queue, tenant).inc(n)

    def before_process(self, ctx: ProcessContext) -> None:
        tenant = self.tenant_label(ctx.delivery.tenant)
        ctx.state[self] = tenant
        self._m["in_flight"].labels(ctx.queue, tenant).inc()

    def after_process(self, ctx: ProcessContext) -> None:
        tenant = ctx.state.get(self)
        if tenant is None:  # before_process did not run (an earlier middleware failed)
            return
        self._m["in_flight"].labels(ctx.queue, tenant).dec()
        self._m["duration"].labels(ctx.queue, tenant).observe(ctx.duration or 0.0)

    def on_settle(self, ctx: SettleContext) -> None:
        tenant = self.tenant_label(ctx.delivery.tenant)
        self._m["processed"].labels(ctx.queue, tenant, ctx.outcome.value).inc()

    def on_stats(self, stats: QueueStats) -> None:
        ready: dict[str, int] = {}
        for lane in stats.lanes:
            label = self.tenant_label(lane.lane.tenant)
            ready[label] = ready.get(label, 0) + lane.ready
        for tenant, n in ready.items():
            self._m["ready"].labels(stats.queue, tenant).set(n)
        self._m["dead"].labels(stats.queue).set(stats.dead_letters)
