"""rserpool.service.live_revocation: revocation news for open channels,
on a task.Clock (the registrar over TLS: tests/test_attacks_gate.py and
tests/test_service_revocation.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from twisted.internet import defer, task

from rserpool.security import pki
from rserpool.security.ocsp import OcspDecision, OcspFailure, OcspStatus
from rserpool.service.live_revocation import LiveCertificates
from tests.tlshelpers import TestPKI, make_test_pki


@pytest.fixture(scope="module")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(Path(tmp_path_factory.mktemp("pki")))


class Gate:
    """An OCSP gate whose answers the test sets per subject."""

    enabled = True

    def __init__(self) -> None:
        self.answers: dict[str, OcspDecision] = {}
        self.asked: list[str] = []

    def check(self, cert, chain=()):
        name = cert.subject.rfc4514_string()
        self.asked.append(name)
        return defer.succeed(self.answers.get(name, OcspDecision(True, OcspStatus.GOOD, None, "good")))


REVOKED = OcspDecision(False, OcspStatus.REVOKED, None, "revoked: keyCompromise")
DOWN = OcspDecision(False, None, OcspFailure.UNREACHABLE, "no answer")


def make(test_pki: TestPKI, clock: task.Clock, channels: list, gate: Gate | None = None,
         interval: float = 60.0) -> tuple[LiveCertificates, list]:
    revoked: list = []
    live = LiveCertificates(clock, lambda: list(channels), lambda fp, reason: revoked.append((fp, reason)),
                            revocation=gate, recheck_interval=interval,
                            trust_roots=[test_pki.ca.issued.certificate])
    return live, revoked


def entry(issued) -> tuple:
    return (f"fp-{issued.certificate.subject.rfc4514_string()}", issued.certificate, (issued.certificate,))


def test_a_crl_reload_reports_the_revoked_live_certificates(test_pki: TestPKI) -> None:
    clock = task.Clock()
    clock.advance(dt.datetime.now(dt.timezone.utc).timestamp())
    pe1, pe2 = entry(test_pki.pe1.issued), entry(test_pki.pe2.issued)
    live, revoked = make(test_pki, clock, [pe1, pe1, pe2])  # two channels of pe1
    now = dt.datetime.now(dt.timezone.utc)
    crl = pki.create_crl(test_pki.ca.issued, [test_pki.pe1.issued.serial], now - dt.timedelta(minutes=1))
    live.crls_reloaded([crl])
    assert revoked == [(pe1[0], "certificate revoked (CRL reloaded)")]  # once per certificate
    # A CRL of another CA, or one that revokes nobody here, reports nothing.
    rogue = pki.create_crl(test_pki.rogue_ca.issued, [test_pki.pe2.issued.serial], now)
    live.crls_reloaded([rogue, pki.create_crl(test_pki.ca.issued, [], now)])
    assert len(revoked) == 1


def test_the_periodic_recheck_reports_only_a_verified_revoked(test_pki: TestPKI) -> None:
    clock = task.Clock()
    gate = Gate()
    pe1, pe2 = entry(test_pki.pe1.issued), entry(test_pki.pe2.issued)
    live, revoked = make(test_pki, clock, [pe1, pe1, pe2], gate, interval=30.0)
    live.start()
    clock.advance(30.0)
    assert sorted(gate.asked) == sorted({pe1[1].subject.rfc4514_string(), pe2[1].subject.rfc4514_string()})
    assert revoked == []
    gate.answers[pe2[1].subject.rfc4514_string()] = DOWN  # a responder outage closes nothing
    gate.answers[pe1[1].subject.rfc4514_string()] = REVOKED
    clock.advance(30.0)
    assert revoked == [(pe1[0], "certificate revoked (OCSP: revoked: keyCompromise)")]
    assert live.stats["rechecks"] == 2
    live.stop()
    clock.advance(300.0)
    assert live.stats["rechecks"] == 2


def test_no_recheck_without_ocsp_or_with_interval_zero(test_pki: TestPKI) -> None:
    clock = task.Clock()
    for gate, interval in ((None, 30.0), (Gate(), 0.0)):
        live, _ = make(test_pki, clock, [entry(test_pki.pe1.issued)], gate, interval)
        live.start()
        assert clock.getDelayedCalls() == []
    with pytest.raises(ValueError):
        make(test_pki, clock, [], Gate(), interval=-1.0)


def test_an_answer_about_a_certificate_reaches_only_its_live_channels(test_pki: TestPKI) -> None:
    clock = task.Clock()
    pe1 = entry(test_pki.pe1.issued)
    live, revoked = make(test_pki, clock, [pe1], Gate())
    live.ocsp_decided("fp-unknown", REVOKED)  # no live channel has it
    live.ocsp_decided(pe1[0], DOWN)
    live.ocsp_decided(pe1[0], OcspDecision(True, OcspStatus.GOOD, None, "good"))
    assert revoked == []
    live.ocsp_decided(pe1[0], REVOKED)
    assert [fp for fp, _ in revoked] == [pe1[0]]
