"""Prometheus metrics of a registrar, collected when Prometheus scrapes.

:class:`RegistrarCollector` is a ``prometheus_client`` custom collector:
nothing is updated per request; at scrape time it reads the counters the
core and the shell keep anyway (``rserpool.stats``) and one number per pool.
A scrape therefore costs one step per pool, never one per PE: a registrar
holding 100,000 PEs in a few pools is scraped in well under a millisecond
of collection.  docs/metrics.md lists every metric.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from rserpool import stats
from rserpool.handlespace import POLICY_NAMES
from rserpool.wire.params import pool_handle_text

__all__ = ["RegistrarCollector", "exposition", "make_registry"]

#: Core counters exported as ``rserpool_<name>_total``.
_CORE = {
    "registrations": ("registrations", "PEs registered (new PEs)"),
    "reregistrations": ("reregistrations", "Re-registrations of registered PEs"),
    "deregistrations": ("deregistrations", "PEs deregistered at their own request"),
    "resolutions": ("handle_resolutions", "Handle resolutions answered with PEs"),
    "refused": ("refused_requests", "Requests refused, any cause"),
    "removed": ("removals", "PEs removed by the registrar (expiry, keep-alive timeout, reports, channel loss)"),
    "keepalive_timeouts": ("keepalive_timeouts", "PEs removed for an unanswered ENDPOINT_KEEP_ALIVE"),
    "unreachable_reports": ("unreachability_reports", "ENDPOINT_UNREACHABLE reports received"),
    "unauthorized": ("authorization_refusals", "Requests the authorizer refused"),
    "authorization_outages": ("authorization_outages", "Requests refused because the authorizer could not answer"),
}


class RegistrarCollector(Collector):
    """Reads ``registrar`` (a ``RegistrarService``) at every collection."""

    def __init__(self, registrar: Any) -> None:
        self.registrar = registrar

    def collect(self) -> Iterator[Metric]:
        registrar = self.registrar
        core = registrar.core
        handlespace = core.handlespace
        events = registrar.events
        info = InfoMetricFamily("rserpool_registrar", "This registrar (ENRP server)")
        info.add_metric([], {"server_id": f"{core.settings.server_id:08x}"})
        yield info
        started = registrar.started
        if started is not None:
            yield GaugeMetricFamily("rserpool_registrar_start_time_seconds",
                                    "When the registrar started (Unix time)", value=started)
        yield GaugeMetricFamily("rserpool_asap_channels", "Open ASAP channels", value=len(core.channel_states))
        yield GaugeMetricFamily("rserpool_pools", "Pools in the handlespace", value=handlespace.pool_count)
        yield GaugeMetricFamily("rserpool_handlespace_pool_elements", "PEs in all pools", value=len(handlespace))
        yield GaugeMetricFamily("rserpool_owned_pool_elements", "PEs whose home registrar is this one",
                                value=handlespace.owned_count(core.settings.server_id))
        per_pool = GaugeMetricFamily("rserpool_pool_elements", "PEs in a pool", labels=["pool", "policy"])
        for handle in handlespace.pool_handles():
            pool = handlespace.pool_info(handle)
            if pool is not None:
                per_pool.add_metric([pool_handle_text(handle),
                                     POLICY_NAMES.get(pool.policy_type, f"0x{pool.policy_type:08x}")], pool.size)
        yield per_pool
        counts = core.stats
        for key, (name, documentation) in _CORE.items():
            yield CounterMetricFamily(f"rserpool_{name}", documentation, value=counts.get(key, 0))
        by_cause = CounterMetricFamily("rserpool_refusals", "Refused requests by RFC 5354 cause",
                                       labels=["cause", "cause_name"])
        for cause, count in sorted(core.refused_by_cause.items()):
            by_cause.add_metric([f"0x{cause:x}", stats.cause_name(cause)], count)
        yield by_cause
        authentication = CounterMetricFamily("rserpool_authentications", "Authentications by mechanism and outcome",
                                             labels=["mechanism", "outcome"])
        for (mechanism, outcome), count in sorted(events.authentication.items()):
            authentication.add_metric([mechanism, outcome], count)
        yield authentication
        outages = CounterMetricFamily("rserpool_backend_outages", "Requests a backend could not answer",
                                      labels=["backend"])
        for backend, count in sorted(events.backend_outages.items()):
            outages.add_metric([backend], count)
        yield outages
        yield CounterMetricFamily("rserpool_tls_handshake_failures", "ASAP TLS handshakes that failed",
                                  value=events.tls_handshake_failures)
        admin = CounterMetricFamily("rserpool_admin_requests", "Admin endpoint requests by outcome",
                                    labels=["outcome"])
        for outcome, count in sorted(events.admin_requests.items()):
            admin.add_metric([outcome], count)
        yield admin


def make_registry(registrar: Any) -> CollectorRegistry:
    """A private registry with the registrar's collector (no global state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RegistrarCollector(registrar))
    return registry


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The registry in the format the ``Accept`` header asks for (Prometheus
    text or OpenMetrics): ``(body, content type)``."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
