"""Prometheus metrics: the collector read at scrape time, and a real
Prometheus server scraping a registrar (issue 15, item 3)."""

from __future__ import annotations

import json
import socket
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from rserpool.admin.metrics import exposition, make_registry
from rserpool.wire import AsapDeregistration, AsapRegistration
from rserpool.testing import identified_channel
from tests.aaahelpers import BackendProcess
from tests.adminhelpers import TOKEN, AdminHarness, admin_cert
from tests.asaphelpers import make_pe
from tests.conftest import require_tool
from tests.tlshelpers import make_test_pki
from tests.test_asap_registrar import make_core, register


class _FakeRegistrar:
    """What the collector reads of a RegistrarService."""

    def __init__(self):
        from rserpool.stats import EventCounts

        self.core = make_core()
        self.events = EventCounts()
        self.started = 1000.0


def _samples(registrar) -> dict:
    body, content_type = exposition(make_registry(registrar))
    assert content_type.startswith("text/plain")
    result = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


def test_the_collector_reads_the_core_at_each_scrape():
    registrar = _FakeRegistrar()
    channel = identified_channel(registrar.core, "127.0.0.1", "pe1")
    before = _samples(registrar)
    assert before[("rserpool_handlespace_pool_elements", ())] == 0
    register(registrar.core, channel, 1)
    register(registrar.core, channel, 2)
    register(registrar.core, channel, 3, handle=b"\xff")
    registrar.events.authenticated("certificate", True)
    registrar.events.outage("authorizer")
    after = _samples(registrar)
    assert after[("rserpool_pool_elements", (("policy", "RoundRobin"), ("pool", "echo")))] == 2
    assert after[("rserpool_pool_elements", (("policy", "RoundRobin"), ("pool", "hex:ff")))] == 1
    assert after[("rserpool_handlespace_pool_elements", ())] == 3
    assert after[("rserpool_registrations_total", ())] == 3
    assert after[("rserpool_authentications_total", (("mechanism", "certificate"), ("outcome", "success")))] == 1
    assert after[("rserpool_backend_outages_total", (("backend", "authorizer"),))] == 1
    assert after[("rserpool_registrar_info", (("server_id", f"{registrar.core.settings.server_id:08x}"),))] == 1
    assert after[("rserpool_registrar_start_time_seconds", ())] == 1000.0


def test_refusals_are_exported_by_cause():
    registrar = _FakeRegistrar()
    anonymous = identified_channel(registrar.core, "127.0.0.1", None)
    registrar.core.message_received(anonymous, AsapRegistration(b"echo", make_pe(1)), 0.0)
    samples = _samples(registrar)
    key = ("rserpool_refusals_total", (("cause", "0xa"), ("cause_name", "Rejected Due to Security Considerations")))
    assert samples[key] == 1
    assert samples[("rserpool_refused_requests_total", ())] == 1


def test_openmetrics_when_asked():
    body, content_type = exposition(make_registry(_FakeRegistrar()), "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_a_scrape_never_walks_the_pes():
    """A scrape reads one size per pool: walking the PEs is forbidden here."""
    registrar = _FakeRegistrar()
    channel = identified_channel(registrar.core, "127.0.0.1", "pe1")
    for pe_id in range(1, 51):
        register(registrar.core, channel, pe_id, handle=b"pool%d" % (pe_id % 5))
    handlespace = registrar.core.handlespace

    def forbidden(*args, **kwargs):
        raise AssertionError("the collector walked the PEs")

    handlespace.pool_members = handlespace.entries = handlespace.resolve = forbidden
    samples = _samples(registrar)
    assert sum(v for (name, _), v in samples.items() if name == "rserpool_pool_elements") == 50


# -- a real Prometheus ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusProcess(BackendProcess):
    """``prometheus`` with a private configuration and storage on a free loopback port."""

    name = "prometheus"

    def __init__(self, base_dir: Path, executable: str, jobs: list[dict]) -> None:
        super().__init__(base_dir, executable, "prometheus.log")
        self.jobs = jobs
        self.port = _free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self) -> None:
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": self.jobs}
        # YAML is a superset of JSON.
        (self.base / "prometheus.yml").write_text(json.dumps(config, indent=1))

    def command(self) -> list[str]:
        return [self.executable, f"--config.file={self.base / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.base / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn"]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self._check_running()
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise self._not_ready()

    def api(self, path: str, **query: str) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())


@pytest.mark.integration
class PrometheusScrapesTheRegistrar(AdminHarness, unittest.TestCase):
    """Prometheus scrapes /metrics over HTTPS, with the admin client
    certificate (job ``cert``) and with the bearer token (job ``token``); a
    PE's certificate (job ``pe``) is refused.  PromQL through Prometheus'
    HTTP API follows registrations and deregistrations."""

    token = TOKEN
    timeout = 120

    def setUp(self):
        executable = require_tool("prometheus")
        self._tmp = tempfile.TemporaryDirectory()
        base = Path(self._tmp.name)
        test_pki = make_test_pki(base / "pki")
        d = self.start_admin(test_pki)
        d.addCallback(lambda _: self._start_prometheus(executable, base, test_pki))
        return d

    def _start_prometheus(self, executable, base, test_pki):
        admin = admin_cert(test_pki)
        target = {"targets": [f"127.0.0.1:{self.admin_port}"]}
        tls_common = {"ca_file": str(test_pki.ca.cert), "server_name": "localhost"}
        token_file = base / "prometheus.token"
        token_file.write_text(TOKEN + "\n")
        jobs = [
            {"job_name": "cert", "scheme": "https", "static_configs": [target],
             "tls_config": {**tls_common, "cert_file": str(admin.cert), "key_file": str(admin.key)}},
            {"job_name": "token", "scheme": "https", "static_configs": [target], "tls_config": tls_common,
             "authorization": {"type": "Bearer", "credentials_file": str(token_file)}},
            {"job_name": "pe", "scheme": "https", "static_configs": [target],
             "tls_config": {**tls_common, "cert_file": str(test_pki.pe1.cert), "key_file": str(test_pki.pe1.key)}},
        ]
        self.prometheus = PrometheusProcess(base, executable, jobs)
        return threads.deferToThread(self.prometheus.start)

    @defer.inlineCallbacks
    def tearDown(self):
        yield threads.deferToThread(self.prometheus.stop)
        yield self.stop_admin()
        self._tmp.cleanup()

    @defer.inlineCallbacks
    def value_becomes(self, query: str, expected: float, seconds: float = 40.0):
        """Polls Prometheus (bounded) until ``query`` returns ``expected``."""
        deadline = reactor.seconds() + seconds
        last = None
        while reactor.seconds() < deadline:
            answer = yield threads.deferToThread(self.prometheus.api, "query", query=query)
            result = answer["data"]["result"]
            last = result
            if len(result) == 1 and float(result[0]["value"][1]) == expected:
                return result
            yield task.deferLater(reactor, 0.5, lambda: None)
        self.fail(f"{query} did not become {expected} within {seconds} s (last {last});\n"
                  + self.prometheus.log_tail())

    @defer.inlineCallbacks
    def test_promql_follows_registrations_and_deregistrations(self):
        client = yield self.register_pe(0x101)
        for pe_id in (0x102, 0x103):
            reply = yield client.request(AsapRegistration(b"echo", make_pe(pe_id)))
            self.assert_accepted(reply)
        yield self.value_becomes('rserpool_pool_elements{job="cert",pool="echo"}', 3)
        yield self.value_becomes('rserpool_pool_elements{job="token",pool="echo"}', 3)
        for pe_id in (0x101, 0x102):
            yield client.request(AsapDeregistration(b"echo", pe_id))
        yield self.value_becomes('rserpool_pool_elements{job="cert",pool="echo"}', 1)
        yield self.value_becomes('rserpool_deregistrations_total{job="token"}', 2)
        targets = yield threads.deferToThread(self.prometheus.api, "targets")
        health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets["data"]["activeTargets"]}
        self.assertEqual(health["cert"][0], "up")
        self.assertEqual(health["token"][0], "up")
        self.assertEqual(health["pe"][0], "down")
        self.assertIn("403", health["pe"][1])
