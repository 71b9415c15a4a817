"""Prometheus metrics for the broker and the connectors, served at ``/metrics``.

Labels carry metadata only: stage names, purposes from the taxonomy, member ids, statuses, error
codes and route templates. Never a criteria value, a name, an officer pseudonym, a case reference
or a query id — and no label takes an unbounded value: a purpose outside the policy taxonomy is
counted as ``other``, a route is its URL *template*.

Under gunicorn each worker is a process. When ``PROMETHEUS_MULTIPROC_DIR`` is set (by
``deploy/gunicorn.conf.py``) prometheus-client writes every worker's samples to files there and a
scrape of any worker adds them up; the gauges read at scrape time (audit log size, checkpoint
age) come from the shared SQLCipher files, so any worker answers for all. Without the variable
(tests, ``flask run``) the metrics live in this process only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ibex.auditlog import AppendReceipt, AuditLog
from ibex.errors import AuditError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("verify", "decide", "route", "audit")
OTHER = "other"

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

QUERIES = Counter(
    "ibex_broker_queries",
    "Queries the broker admitted and answered, by purpose.",
    ["purpose"],
    registry=REGISTRY,
)
TARGET_RESULTS = Counter(
    "ibex_broker_target_results",
    "Per-partner outcomes of admitted queries: the policy decision and the target status.",
    ["purpose", "partner", "decision", "status"],
    registry=REGISTRY,
)
REFUSALS = Counter(
    "ibex_broker_refusals",
    "Queries the broker refused before deciding, by problem code.",
    ["code"],
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "ibex_broker_stage_seconds",
    "Time spent per stage of the broker's decision path (verify, decide, route, audit).",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
PARTNER_SECONDS = Histogram(
    "ibex_partner_request_seconds",
    "Round trip of a routed query to a partner connector, as the broker measured it.",
    ["partner"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ENGINE_ERRORS = Counter(
    "ibex_policy_engine_errors",
    "Decisions the policy engine could not make (denied by default), by engine rule.",
    ["rule"],
    registry=REGISTRY,
)
AUDIT_APPEND_SECONDS = Histogram(
    "ibex_audit_append_seconds",
    "Time from handing entries to the audit log until they are durable.",
    ["log"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
AUDIT_APPEND_FAILURES = Counter(
    "ibex_audit_append_failures",
    "Audit appends that failed (the query was refused: fail closed).",
    ["log"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "ibex_http_requests",
    "HTTP requests by route template, method and status.",
    ["app", "route", "method", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "ibex_http_request_seconds",
    "HTTP request latency by route template.",
    ["app", "route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ENGINE_RULES = frozenset(
    {"engine.error", "engine.timeout", "engine.undefined", "engine.unreachable"}
)

# Every metric family name the code defines (without the ``_total``/``_bucket`` suffixes the
# exposition adds), for the deploy test that checks alert rules name real metrics.
METRIC_NAMES: tuple[str, ...] = (
    "ibex_broker_queries_total",
    "ibex_broker_target_results_total",
    "ibex_broker_refusals_total",
    "ibex_broker_stage_seconds",
    "ibex_partner_request_seconds",
    "ibex_policy_engine_errors_total",
    "ibex_audit_append_seconds",
    "ibex_audit_append_failures_total",
    "ibex_http_requests_total",
    "ibex_http_request_seconds",
    "ibex_audit_entries",
    "ibex_audit_checkpoint_size",
    "ibex_audit_checkpoint_age_seconds",
    "ibex_audit_unusable",
)


def observe_stage(stage: str, seconds: float) -> None:
    """The ``observe`` callback of :class:`broker.intake.Intake`."""
    if stage in STAGES:
        STAGE_SECONDS.labels(stage).observe(seconds)


def purpose_label(purpose: object, known: Collection[str]) -> str:
    """A purpose id from the taxonomy, or ``other``: a label never takes an arbitrary value."""
    return purpose if isinstance(purpose, str) and purpose in known else OTHER


def record_answer(
    purpose: str, results: Iterable[Mapping[str, Any]], members: Collection[str]
) -> None:
    """Count one answered query and its per-partner results (from the signed aggregate)."""
    QUERIES.labels(purpose).inc()
    for result in results:
        target = result.get("target")
        partner = target if isinstance(target, str) and target in members else OTHER
        decision = result.get("decision") or {}
        allowed = "allow" if decision.get("allow") is True else "deny"
        status = str(result.get("status", "unknown"))
        TARGET_RESULTS.labels(purpose, partner, allowed, status).inc()
        elapsed = result.get("elapsed_ms")
        if isinstance(elapsed, int | float) and status not in ("denied", "unsupported-schema"):
            PARTNER_SECONDS.labels(partner).observe(float(elapsed) / 1000.0)
        for reason in decision.get("reasons") or ():
            rule = reason.get("rule") if isinstance(reason, Mapping) else None
            if rule in ENGINE_RULES:
                ENGINE_ERRORS.labels(rule).inc()


def record_refusal(code: str) -> None:
    REFUSALS.labels(code).inc()


class InstrumentedAuditLog(AuditLog):
    """An :class:`~ibex.auditlog.AuditLog` that times its appends and counts its failures."""

    def __init__(self, *args: Any, metrics_name: str = "audit", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics_name = metrics_name

    def append_many(self, entries: Sequence[Mapping[str, Any]]) -> list[AppendReceipt]:
        started = time.perf_counter()
        try:
            receipts = super().append_many(entries)
        except AuditError:
            AUDIT_APPEND_FAILURES.labels(self.metrics_name).inc()
            raise
        AUDIT_APPEND_SECONDS.labels(self.metrics_name).observe(time.perf_counter() - started)
        return receipts

    def checkpoint_state(self) -> tuple[int, int | None, float | None]:
        """(entries, size of the latest signed checkpoint, when it was signed) — read-only."""
        latest = self._store.latest_checkpoint()
        size = self.size()
        if latest is None:
            return size, None, None
        return size, latest.size, latest.signed_at


class AuditCollector(Collector):
    """Scrape-time gauges of one audit log: entries, checkpoint size and age, usability."""

    def __init__(self, name: str, log: Callable[[], AuditLog]) -> None:
        self._name = name
        self._log = log

    def collect(self) -> Iterator[Metric]:
        entries = GaugeMetricFamily(
            "ibex_audit_entries", "Entries in the audit log.", labels=["log"]
        )
        cp_size = GaugeMetricFamily(
            "ibex_audit_checkpoint_size",
            "Tree size of the latest signed checkpoint.",
            labels=["log"],
        )
        cp_age = GaugeMetricFamily(
            "ibex_audit_checkpoint_age_seconds",
            "Seconds since the latest checkpoint was signed.",
            labels=["log"],
        )
        unusable = GaugeMetricFamily(
            "ibex_audit_unusable", "1 when the audit log cannot be read.", labels=["log"]
        )
        try:
            log = self._log()
            if isinstance(log, InstrumentedAuditLog):
                size, signed_size, signed_at = log.checkpoint_state()
            else:
                size, signed_size, signed_at = log.size(), None, None
        except Exception:
            unusable.add_metric([self._name], 1.0)
        else:
            unusable.add_metric([self._name], 0.0)
            entries.add_metric([self._name], float(size))
            if signed_size is not None and signed_at is not None:
                cp_size.add_metric([self._name], float(signed_size))
                cp_age.add_metric([self._name], max(0.0, time.time() - signed_at))
        yield from (entries, cp_size, cp_age, unusable)


class _Static(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


def multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


def exposition(extra: Sequence[Collector] = ()) -> bytes:
    """The text exposition: this process's metrics (or every worker's) plus ``extra``."""
    registry = CollectorRegistry(auto_describe=False)
    path = multiprocess_dir()
    if path is not None:
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Static(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


def init_app(app: Flask, name: str, collectors: Sequence[Collector] = ()) -> None:
    """Add ``GET /metrics`` and per-route request counting to ``app``."""

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(resp: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        HTTP_REQUESTS.labels(name, rule, request.method, str(resp.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            HTTP_SECONDS.labels(name, rule).observe(time.perf_counter() - started)
        return resp

    def metrics() -> Response:
        return Response(exposition(collectors), content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
