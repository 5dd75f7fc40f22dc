"""OpenTelemetry traces: a span per call, a child span per turn (the end of the caller's speech to the reply's first
packet, each stage an event at its time) and per response, with the GenAI semantic conventions where they apply.

Off unless configured the standard way (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, …) or with ``--otlp-endpoint URL`` (OTLP over HTTP/protobuf,
``URL/v1/traces``). Off, ``tracer()`` is None and every caller checks that first: nothing is imported, allocated
or timed (``bench/tracing.py`` measures it). On, spans are batched and exported from the SDK's own thread.

A signaling request's W3C ``traceparent`` (and ``tracestate``) header makes the call's span a child of the app's
trace: the app's "user clicked Talk" and our "turn 3 took 480 ms" are one trace.

The spans are made after the fact from the engine's marks (monotonic seconds), converted to wall-clock nanoseconds
once: a turn's stages are known only when its response ends, and a span that is opened early and closed late
would have to live across the engine's decisions, which the executor does not keep.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("voxgate.tracing")

_TRACER = None
STAGES_IN_TURN = ("speech_end", "turn_end", "final_transcript", "first_token", "first_chunk", "first_tts_audio",
                  "first_audio_written", "first_audio_sent")


def configure(endpoint: str | None = None, service: str = "voxgate") -> bool:
    """Turn tracing on if an endpoint is given here or in the environment; True if it is on. Called once per
    process (the CLI); a missing ``voxgate[otel]`` install is said plainly, and tracing stays off."""
    global _TRACER
    env = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint and not env:
        return False
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("tracing asked for, but OpenTelemetry is not installed: pip install 'voxgate[otel]'")
        return False
    attrs = {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service}
    provider = TracerProvider(resource=Resource.create(attrs))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces") if endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    _TRACER = provider.get_tracer("voxgate")
    _PROVIDER[0] = provider
    return True


_PROVIDER: list = [None]


def tracer():
    """The tracer, or None when tracing is off (the common case: one global read)."""
    return _TRACER


def shutdown() -> None:
    """Export what is pending (at exit)."""
    if _PROVIDER[0] is not None:
        _PROVIDER[0].shutdown()


def _ns(mono: float) -> int:
    """A monotonic time as wall-clock nanoseconds."""
    return int((time.time() - (time.monotonic() - mono)) * 1e9)


class CallTrace:
    """One call's span and its turns' (made only when tracing is on: ``start`` returns None otherwise)."""

    def __init__(self, span, context):
        self.span, self.context = span, context
        self.turns = 0

    @classmethod
    def start(cls, call_id: str, attributes: dict, traceparent: dict | None = None) -> "CallTrace | None":
        t = _TRACER
        if t is None:
            return None
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = TraceContextTextMapPropagator().extract(traceparent) if traceparent else None
        span = t.start_span("voxgate.call", context=parent, kind=trace.SpanKind.SERVER,
                            attributes={"voxgate.call.id": call_id, **{k: v for k, v in attributes.items()
                                                                       if v is not None}})
        return cls(span, trace.set_span_in_context(span))

    def event(self, name: str, attributes: dict | None = None) -> None:
        self.span.add_event(name, attributes or {})

    def response(self, marks: dict, info: dict) -> None:
        """A response ended: its span (``gen_ai`` chat), and, when it answered a turn, the turn's span around it
        from the end of the caller's speech to its first packet, each stage an event."""
        from opentelemetry import trace

        t = _TRACER
        start = marks.get("speech_end") or marks.get("turn_end") or marks.get("started")
        end = marks.get("first_audio_sent") or marks.get("ended") or max(marks.values())
        if start is None:
            return
        parent = self.context
        turn = None
        if "turn_end" in marks or "speech_end" in marks:
            self.turns += 1
            turn = t.start_span("voxgate.turn", context=self.context, start_time=_ns(start),
                                attributes={"voxgate.turn.index": self.turns,
                                            "voxgate.turn.latency_ms": round((end - start) * 1000, 1)})
            for stage in STAGES_IN_TURN:
                if stage in marks:
                    turn.add_event(stage, timestamp=_ns(marks[stage]))
            parent = trace.set_span_in_context(turn)
        model = info.get("model") or "voxgate"
        resp = t.start_span(f"chat {model}", context=parent, kind=trace.SpanKind.CLIENT,
                            start_time=_ns(marks.get("started", start)), attributes={
                                "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                                "gen_ai.response.id": info.get("id"),
                                "gen_ai.usage.output_tokens": info.get("tokens", 0),
                                "gen_ai.response.finish_reasons": [info.get("reason") or info.get("status")],
                                "voxgate.response.status": info.get("status"),
                                "voxgate.response.interrupted": bool(info.get("barged")),
                                "voxgate.response.speculative": bool(marks.get("pause")),
                                "voxgate.response.tool_calls": info.get("tool_calls", 0)})
        for stage in ("first_token", "first_chunk", "first_tts_audio"):
            if stage in marks:
                resp.add_event(stage, timestamp=_ns(marks[stage]))
        resp.end(end_time=_ns(marks.get("ended", end)))
        if turn is not None:
            turn.end(end_time=_ns(end))

    def end(self, reason: str) -> None:
        self.span.set_attribute("voxgate.call.end_reason", reason)
        self.span.end()
