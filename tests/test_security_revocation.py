"""rserpool.security.revocation: CRL expiry warnings, the CrlMonitor (reload
on change, refresh first, listeners after a reload; task.Clock) and the
OCSP mode setting.  The registrar's use of it over real TLS:
tests/test_service_revocation.py."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pytest
from twisted.internet import task

from rserpool.security import pki as pkimod
from rserpool.security.crl import crl_info
from rserpool.security.ocsp import FailurePolicy
from rserpool.security.revocation import CrlMonitor, OcspMode, crl_warning


# -- CrlMonitor with a fake clock ----------------------------------------------------------


def test_crl_warning_levels(tmp_path):
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    ca = pkimod.create_ca("warn CA", now - timedelta(days=30))
    crl = pkimod.create_crl(ca, [], now - timedelta(days=1))
    info = crl_info(crl, now)
    assert info.next_update is not None
    assert crl_warning("a.pem", info, timedelta(0)) is None
    soon = crl_warning("a.pem", info, info.expires_in + timedelta(seconds=1))
    assert soon is not None and not soon.expired and "expires" in soon.text
    late = crl_warning("a.pem", crl_info(crl, info.next_update + timedelta(seconds=1)), timedelta(days=1))
    assert late is not None and late.expired and "EXPIRED" in late.text


def test_crl_monitor_reloads_on_change_and_warns_once(tmp_path):
    now = datetime.now(timezone.utc)
    ca = pkimod.create_ca("monitor CA", now - timedelta(days=30))
    first = pkimod.create_crl(ca, [], now - timedelta(hours=1))
    path = pkimod.write_crl(tmp_path / "ca.crl", first)
    expires = crl_info(first, now).next_update
    clock = task.Clock()
    clock.advance(now.timestamp())
    reloaded = []
    monitor = CrlMonitor(clock, [str(path)], reloaded.append, interval=60.0, warn_before=timedelta(hours=1))
    logged = []
    from twisted.logger import globalLogPublisher

    def observer(event):
        if "CRL" in str(event.get("text", "")):
            logged.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        monitor.start()
        assert monitor.warnings == [] and reloaded == []
        clock.advance(60.0)
        assert reloaded == []  # unchanged file: no reload
        # Close to expiry: one warning, not one per tick.
        clock.advance((expires - now).total_seconds() - 1800)
        clock.advance(60.0)
        assert [w.expired for w in monitor.warnings] == [False]
        assert len(logged) == 1
        # Expired: a new (error) message.
        clock.advance(3600.0)
        assert [w.expired for w in monitor.warnings] == [True]
        assert len(logged) == 2
        # A fresh CRL arrives: reloaded, warnings gone.
        fresh = pkimod.create_crl(ca, [0x99], datetime.fromtimestamp(clock.seconds(), timezone.utc), crl_number=2)
        pkimod.write_crl(path, fresh)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
        clock.advance(60.0)
        assert len(reloaded) == 1 and len(reloaded[0]) == 1
        assert reloaded[0][0].get_revoked_certificate_by_serial_number(0x99) is not None
        assert monitor.warnings == []
        # A broken file keeps the old CRLs.
        path.write_bytes(b"garbage")
        clock.advance(60.0)
        assert monitor.reloads == 1 and len(reloaded) == 1
    finally:
        monitor.stop()
        globalLogPublisher.removeObserver(observer)
    assert clock.getDelayedCalls() == []


def test_crl_monitor_refreshes_first_and_tells_listeners_after_a_reload(tmp_path):
    from rserpool.security import devpki
    from rserpool.security.revocation import revoked_by

    paths = devpki.ensure_dev_pki(tmp_path, now=datetime.now(timezone.utc))
    ca = devpki.load_dev_ca(tmp_path)
    pe = pkimod.load_certificate(paths.pe_cert)
    clock = task.Clock()
    clock.advance(time.time())
    refreshed, heard, order = [], [], []
    pending = []

    def refresh(now):
        refreshed.append(now)
        for serial in pending:
            devpki.ensure_dev_crl(tmp_path, ca, now, revoke=[serial])
            os.utime(paths.crl, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
        pending.clear()

    monitor = CrlMonitor(clock, [str(paths.crl)], lambda crls: order.append("options"),
                         interval=60.0, refresh=refresh)

    def broken(crls):
        raise RuntimeError("a listener bug")

    monitor.add_reload_listener(broken)
    monitor.add_reload_listener(lambda crls: (order.append("listener"), heard.append(crls)))
    monitor.start()
    assert len(refreshed) == 1 and heard == [] and not monitor.revoked(pe, ca.certificate)
    pending.append(pe.serial_number)
    clock.advance(60.0)
    assert len(refreshed) == 2 and order == ["options", "listener"]
    (crls,) = heard
    assert monitor.crls == crls and monitor.revoked(pe, ca.certificate)
    now = datetime.fromtimestamp(clock.seconds(), timezone.utc)
    assert revoked_by(crls, pe, ca.certificate, now)
    # A CRL of another CA, or one that is not valid at ``now``, revokes nothing.
    other = pkimod.create_ca("other", now)
    assert not revoked_by(crls, pe, other.certificate, now)
    assert not revoked_by(crls, pe, ca.certificate, now + timedelta(days=60))
    monitor.remove_reload_listener(broken)
    monitor.stop()
    assert clock.getDelayedCalls() == []


def test_ocsp_mode_parsing():
    assert OcspMode.parse(" Hard ") is OcspMode.HARD
    assert OcspMode.SOFT.policy is FailurePolicy.SOFT_FAIL
    assert OcspMode.HARD.policy is FailurePolicy.HARD_FAIL
    with pytest.raises(ValueError):
        OcspMode.parse("maybe")
