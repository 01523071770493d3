"""OpenTelemetry tracing for workq (extra ``workq[otel]``).

>>> from workq.contrib.opentelemetry import OpenTelemetry
>>> broker = workq.connect(url, middleware=[OpenTelemetry()])   # doctest: +SKIP

Publishing makes a PRODUCER span ``send <queue>`` and puts its W3C trace context
(``traceparent``, ``tracestate``) in every message's headers; handling makes a CONSUMER
span ``process <queue>`` whose parent is that context, current while the handler runs,
so the consumer's work continues the producer's trace. Attributes follow the
OpenTelemetry messaging semantic conventions (``messaging.system``,
``messaging.destination.name``, ``messaging.operation.name`` / ``.type``,
``messaging.message.id``, ``messaging.batch.message_count``), plus ``workq.tenant``,
``workq.priority``, ``workq.attempt`` and ``workq.outcome``.
"""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError(
        "workq.contrib.opentelemetry needs opentelemetry-api: pip install 'pyworkq[otel]'",
        name=exc.name,
    ) from exc

from .. import __version__ as _version
from ..middleware import Middleware, ProcessContext, PublishContext, SettleContext
from ..outcome import Outcome

__all__ = ["SYSTEMS", "OpenTelemetry"]

#: ``messaging.system`` per workq backend (the conventions' well-known values where any).
SYSTEMS = {"rabbitmq": "rabbitmq", "sqs": "aws_sqs", "kafka": "kafka"}


def _system(backend: str) -> str:
    return SYSTEMS.get(backend, f"workq.{backend}" if backend else "workq")


class OpenTelemetry(Middleware):
    """Traces publishing and handling, propagating the trace through message headers.

    :param tracer_provider: where spans go (default: the global provider).
    :param propagator: how context is written into and read from headers (default:
        the global propagator, W3C trace context unless configured otherwise).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        propagator: Any = None,
    ) -> None:
        self._tracer = trace.get_tracer("workq", _version, tracer_provider=tracer_provider)
        self._propagator = propagator

    def _inject(self, carrier: dict[str, str], ctx: Any) -> None:
        if self._propagator is not None:
            self._propagator.inject(carrier, context=ctx)
        else:
            propagate.inject(carrier, context=ctx)

    def _extract(self, carrier: dict[str, str]) -> Any:
        if self._propagator is not None:
            return self._propagator.extract(carrier)
        return propagate.extract(carrier)

    def before_publish(self, ctx: PublishContext) -> None:
        attributes: dict[str, Any] = {
            "messaging.system": _system(ctx.backend),
            "messaging.destination.name": ctx.queue,
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
        }
        if ctx.batch:
            attributes["messaging.batch.message_count"] = len(ctx.messages)
        elif ctx.messages:
            msg = ctx.messages[0]
            attributes["messaging.message.id"] = msg.id
            attributes["messaging.message.body.size"] = len(msg.body)
            if msg.lane.tenant is not None:
                attributes["workq.tenant"] = msg.lane.tenant
            attributes["workq.priority"] = msg.lane.priority
        span = self._tracer.start_span(
            f"send {ctx.queue}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        span_ctx = trace.set_span_in_context(span)
        for msg in ctx.messages:
            self._inject(msg.headers, span_ctx)
        ctx.state[self] = span

    def after_publish(self, ctx: PublishContext) -> None:
        span = ctx.state.pop(self, None)
        if span is None:
            return
        if ctx.error is not None:
            span.record_exception(ctx.error)
            span.set_status(Status(StatusCode.ERROR, type(ctx.error).__name__))
        span.end()

    def before_process(self, ctx: ProcessContext) -> None:
        d = ctx.delivery
        parent = self._extract(d.headers)
        attributes: dict[str, Any] = {
            "messaging.system": _system(ctx.backend),
            "messaging.destination.name": ctx.queue,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.message.id": d.id,
            "messaging.message.body.size": len(d.body),
            "workq.attempt": d.attempt,
            "workq.priority": d.priority,
        }
        if d.tenant is not None:
            attributes["workq.tenant"] = d.tenant
        span = self._tracer.start_span(
            f"process {ctx.queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        ctx.state[self] = (span, token)

    def after_process(self, ctx: ProcessContext) -> None:
        held = ctx.state.pop(self, None)
        if held is None:
            return
        span, token = held
        try:
            if ctx.outcome is not None:
                span.set_attribute("workq.outcome", ctx.outcome.value)
            if ctx.error is not None:
                span.record_exception(ctx.error)
                if ctx.outcome is not Outcome.ACK:
                    span.set_status(Status(StatusCode.ERROR, type(ctx.error).__name__))
            span.end()
        finally:
            otel_context.detach(token)

    def on_settle(self, ctx: SettleContext) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            attributes: dict[str, Any] = {"workq.outcome": ctx.outcome.value}
            if ctx.delay is not None:
                attributes["workq.delay"] = ctx.delay
            if ctx.reason is not None:
                attributes["workq.reason"] = ctx.reason
            span.add_event("settle", attributes)
