"""The status page: rendering (bounded, escaped) and a real headless
Chromium watching it refresh itself (issue 15, item 4).

Chromium and the client certificate: headless Chromium cannot pick a client
certificate without a machine-wide policy, so the browser test reaches the
page through a TLS-terminating relay that exists only in this test: the
browser speaks plain HTTP to the relay on a loopback port, and the relay
speaks HTTPS to the admin endpoint presenting the ``admin`` client
certificate.  The endpoint itself is unchanged (client certificate
required, ``admin`` action authorized by the rules).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from twisted.internet import defer, endpoints, protocol, reactor, task, threads
from twisted.trial import unittest

from rserpool.admin.page import MAX_ROWS, render, status_page, tag
from rserpool.admin.resource import AdminResource
from rserpool.security import tls
from rserpool.wire import AsapDeregistration
from rserpool.testing import identified_channel
from tests.adminhelpers import AdminHarness, admin_cert
from tests.conftest import IN_CI, require_tool
from tests.tlshelpers import make_test_pki

ARTIFACTS = Path(os.environ.get("RSERPOOL_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "build"
                                / "test-artifacts"))


def _view(**overrides):
    view = {"server_id": "00001234", "started": 0.0, "uptime": 3725.0, "now": 3725.0, "asap_channels": 2,
            "pools": 1, "pool_elements": 1, "peers": [], "counters": {"refused_by_cause": {"0xa": 2}, "refused": 2}}
    view.update(overrides)
    return view


def test_the_page_escapes_what_clients_chose():
    """Pool handles and identities come from PEs: they are text, never markup."""
    hostile = "<script>alert(1)</script>"
    pool = {"handle": hostile, "handle_hex": hostile.encode().hex(), "policy": "RoundRobin", "pool_elements": 1}
    pe = {"pe_id": "00000001", "home_server_id": "00001234", "identity": '"><img src=x onerror=alert(2)>',
          "transports": ["tcp:127.0.0.1:7"], "policy": "RoundRobin", "expires_in": 10.0}
    page = {"pool_elements": [pe], "next": None, "total": 1}
    refusal = {"time": 1.0, "address": "127.0.0.1", "identity": hostile, "request": "registration",
               "pool": hostile, "pe_id": "00000001", "cause": "0xa", "cause_name": "Rejected"}
    html = render(status_page(_view(), [pool], {pool["handle_hex"]: page}, [refusal], 5))
    assert b"<script>" not in html and b"<img" not in html
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert b'http-equiv="refresh" content="5"' in html
    assert b'<link rel="icon" href="data:," />' in html


def test_the_builder_escapes_text_and_attributes_but_not_its_own_markup():
    link = tag("a", "<b>&", href='"><script>x</script>', class_="a b", title=None)
    assert link == '<a href="&quot;&gt;&lt;script&gt;x&lt;/script&gt;" class="a b">&lt;b&gt;&amp;</a>'
    assert tag("p", link, "&") == f"<p>{link}&amp;</p>"
    assert tag("meta", http_equiv="refresh", content="5") == '<meta http-equiv="refresh" content="5" />'


def test_the_main_page_is_bounded():
    """However many PEs the handlespace holds, the main page shows at most MAX_ROWS of them."""
    from rserpool.security.ratelimit import RateLimit
    from tests.test_asap_registrar import make_core, register

    class Registrar:
        def __init__(self):
            from rserpool.stats import EventCounts

            fast = RateLimit(rate=1e9, burst=1e9)
            self.core = make_core(registration_rate=fast, registration_rate_per_address=fast)
            self.handlespace = self.core.handlespace
            self.events = EventCounts()
            self.started = 0.0
            self.listening_addresses = []
            self.server_id = self.core.settings.server_id

        def peer_views(self):
            return []

    registrar = Registrar()
    channel = identified_channel(registrar.core, "127.0.0.1", "pe1")
    for pe_id in range(1, 3 * MAX_ROWS):
        register(registrar.core, channel, pe_id, handle=b"pool%d" % (pe_id % 3))
    html = AdminResource(registrar, access=None)._status_page(0.0)
    assert html.count(b'class="pe"') == MAX_ROWS
    assert b"all " in html and b"/pool/" in html


# -- a real browser -------------------------------------------------------------------------


class _Relay(protocol.Protocol):
    """Plain HTTP from the browser in, HTTPS with the admin certificate out."""

    def connectionMade(self):
        self.pending = []
        self.peer = None
        self.transport.pauseProducing()
        endpoint = endpoints.wrapClientTLS(self.factory.creator, endpoints.TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.factory.port))
        endpoint.connect(protocol.Factory.forProtocol(lambda: _RelayOut(self))).addCallbacks(
            self._connected, lambda failure: self.transport.loseConnection())

    def _connected(self, peer):
        self.peer = peer
        self.transport.resumeProducing()

    def dataReceived(self, data):
        self.peer.transport.write(data)

    def connectionLost(self, reason=None):
        if self.peer is not None:
            self.peer.transport.loseConnection()


class _RelayOut(protocol.Protocol):
    def __init__(self, inbound):
        self.inbound = inbound

    def dataReceived(self, data):
        self.inbound.transport.write(data)

    def connectionLost(self, reason=None):
        self.inbound.transport.loseConnection()


def _browser(profile: str):
    chromium = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:  # pragma: no cover - the test extra installs it
        if IN_CI:
            pytest.fail("selenium is not installed (pip install -e '.[test]')")
        pytest.skip("selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--no-first-run",
                 "--window-size=1280,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.mark.integration
class ChromiumWatchesTheStatusPage(AdminHarness, unittest.TestCase):
    timeout = 120

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        base = Path(self._tmp.name)
        self.driver = None
        d = self.start_admin(make_test_pki(base / "pki"))
        d.addCallback(lambda _: self._start_relay())
        d.addCallback(lambda _: threads.deferToThread(_browser, str(base / "profile")))
        d.addCallback(lambda driver: setattr(self, "driver", driver))
        return d

    def _start_relay(self):
        factory = protocol.Factory.forProtocol(_Relay)
        factory.creator = tls.client_options("localhost", [self.pki.ca.cert],
                                             client_cert=admin_cert(self.pki).pair)
        factory.port = self.admin_port
        d = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        return d.addCallback(lambda port: setattr(self, "relay", port))

    @defer.inlineCallbacks
    def tearDown(self):
        if self.driver is not None:
            yield threads.deferToThread(self.driver.quit)
        if getattr(self, "relay", None) is not None:
            yield self.relay.stopListening()
        yield self.stop_admin()
        self._tmp.cleanup()

    @defer.inlineCallbacks
    def rows(self):
        from selenium.webdriver.common.by import By

        found = yield threads.deferToThread(self.driver.find_elements, By.CSS_SELECTOR, "tr.pe")
        ids = yield threads.deferToThread(lambda: [row.get_attribute("id") for row in found])
        return ids

    @defer.inlineCallbacks
    def page_shows(self, predicate, seconds: float = 15.0):
        """Waits (bounded) for the page, refreshing itself, to satisfy ``predicate(row ids)``."""
        deadline = reactor.seconds() + seconds
        while True:
            try:
                ids = yield self.rows()
            except Exception:  # the page is being replaced by its own refresh
                ids = None
            if ids is not None and predicate(ids):
                return ids
            if reactor.seconds() > deadline:
                self.fail(f"the page did not change as expected within {seconds} s (rows {ids})")
            yield task.deferLater(reactor, 0.2, lambda: None)

    @defer.inlineCallbacks
    def test_the_page_shows_a_new_pe_then_forgets_it(self):
        url = f"http://127.0.0.1:{self.relay.getHost().port}/"
        yield threads.deferToThread(self.driver.get, url)
        title = yield threads.deferToThread(lambda: self.driver.title)
        self.assertEqual(title, f"rserpool registrar {self.registrar.server_id:08x}")
        row = "pe-6563686f-00000077"
        yield self.page_shows(lambda ids: row not in ids)
        client = yield self.register_pe(0x77)
        yield self.page_shows(lambda ids: row in ids)  # no reload by the test: the page's own
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        saved = yield threads.deferToThread(self.driver.save_screenshot, str(shot))
        self.assertTrue(saved and shot.stat().st_size > 1000)
        yield client.request(AsapDeregistration(b"echo", 0x77))
        yield self.page_shows(lambda ids: row not in ids)
        log = yield threads.deferToThread(self.driver.get_log, "browser")
        severe = [entry for entry in log if entry.get("level") == "SEVERE"]
        self.assertEqual(severe, [])
        if os.environ.get("RSERPOOL_DOCS_SCREENSHOT"):
            shutil.copy(shot, os.environ["RSERPOOL_DOCS_SCREENSHOT"])
