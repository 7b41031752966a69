"""The registrar's revocation gate: OCSP after the handshake, CRL upkeep.

Two mechanisms, two places:

- **CRLs** are enforced inside the TLS handshake by OpenSSL (``CRL_CHECK``,
  see :mod:`rserpool.security.tls`): a revoked client certificate never
  completes a handshake.  OpenSSL also refuses *every* certificate of a CA
  whose loaded CRL has passed its nextUpdate, without saying why, so
  :class:`CrlMonitor` warns the operator before and after a CRL expires and
  reloads the files when they change (it polls their mtime every
  ``interval`` seconds on the reactor's clock: no signal handling, works the
  same under ``twistd -n``, systemd and tests).
- **OCSP** cannot run inside the handshake (OpenSSL's verify callback is
  synchronous), so :class:`RevocationGate` checks a client certificate after
  the handshake with :class:`~rserpool.security.ocsp_client.OcspChecker`
  (verified responses, cache, soft or hard fail).  The registrar opens no
  session for that channel, and so creates no state, until the gate allows.

The pure parts (:func:`find_issuer`, :func:`crl_warning`) take the time as
an argument.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

from cryptography import x509
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from rserpool.security import tls
from rserpool.security.crl import CrlError, CrlInfo, check_certificate, crl_info
from rserpool.security.ocsp import (
    FailurePolicy, OcspDecision, OcspError, OcspFailure, OcspOptions, decide,
)

__all__ = [
    "CrlMonitor",
    "CrlMonitorService",
    "CrlWarning",
    "OcspMode",
    "RevocationGate",
    "crl_warning",
    "find_issuer",
    "gate_from_config",
    "revoked_by",
    "verified_chain",
]

_log = Logger()


class OcspMode(enum.Enum):
    """``[tls] ocsp``: off, soft (allow when no answer) or hard (refuse)."""

    OFF = "off"
    SOFT = "soft"
    HARD = "hard"

    @classmethod
    def parse(cls, text: str) -> "OcspMode":
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ValueError(f"OCSP mode must be off, soft or hard, not {text!r}") from None

    @property
    def policy(self) -> FailurePolicy:
        return FailurePolicy.SOFT_FAIL if self is OcspMode.SOFT else FailurePolicy.HARD_FAIL


# --- OCSP gate -------------------------------------------------------------------------


def find_issuer(cert: x509.Certificate, candidates: Iterable[x509.Certificate]) -> x509.Certificate | None:
    """The candidate that signed ``cert`` (name match and signature check)."""
    for candidate in candidates:
        if candidate.subject != cert.issuer or candidate == cert:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except Exception:  # InvalidSignature, unsupported key types
            continue
        return candidate
    return None


def verified_chain(transport: Any) -> list[x509.Certificate]:
    """The chain OpenSSL verified for the peer (leaf first), or [] if none."""
    try:
        chain = tls.tls_connection(transport).get_verified_chain()
    except tls.NotTLSError:
        return []
    return [c.to_cryptography() for c in chain or ()]


class RevocationGate:
    """Asks OCSP about client certificates before the registrar trusts them.

    ``checker`` is an :class:`OcspChecker` (None: OCSP off, every check
    allows at once).  ``trust_roots`` are searched for the issuer when the
    verified chain does not carry it.  ``stats`` counts decisions.
    """

    def __init__(self, checker: Any | None, trust_roots: Sequence[x509.Certificate] = ()) -> None:
        self.checker = checker
        self.trust_roots = tuple(trust_roots)
        self.stats = {"checked": 0, "allowed": 0, "refused": 0, "soft_failed": 0}

    @property
    def enabled(self) -> bool:
        return self.checker is not None

    def check(self, cert: x509.Certificate, chain: Sequence[x509.Certificate] = ()) -> Deferred[OcspDecision]:
        """Fires with the decision for ``cert`` (never fails, except when cancelled).

        ``chain`` is the chain OpenSSL verified, leaf first (see
        :func:`verified_chain`); its second element is taken as the issuer
        as it is.  Without it the issuer is searched (signature checked)
        among ``trust_roots``.
        """
        if self.checker is None:
            return succeed(OcspDecision(True, None, None, "OCSP off"))
        self.stats["checked"] += 1
        if len(chain) > 1 and chain[0] == cert and chain[1].subject == cert.issuer:
            issuer: x509.Certificate | None = chain[1]  # OpenSSL verified this link
        else:
            issuer = find_issuer(cert, list(chain[1:]) + list(self.trust_roots))
        if issuer is None:
            error = OcspError(OcspFailure.NO_RESPONDER, "the certificate's issuer is not known")
            d: Deferred[OcspDecision] = succeed(decide(error, self.checker.policy))
        else:
            d = self.checker.check(cert, issuer)
        return d.addCallback(self._count)

    def _count(self, decision: OcspDecision) -> OcspDecision:
        self.stats["allowed" if decision.allowed else "refused"] += 1
        if decision.soft_failed:
            self.stats["soft_failed"] += 1
        return decision


# --- CRL upkeep ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrlWarning:
    path: str
    info: CrlInfo
    expired: bool
    text: str


def crl_warning(path: str, info: CrlInfo, warn_before: timedelta) -> CrlWarning | None:
    """A warning if the CRL at ``path`` has expired or expires within ``warn_before``."""
    if info.expired:
        return CrlWarning(path, info, True, (
            f"CRL {path} (issuer {info.issuer}) EXPIRED at {info.next_update.isoformat() if info.next_update else '?'}"
            ": OpenSSL now refuses every client certificate of that CA; install a fresh CRL"))
    if info.expires_in is not None and info.expires_in <= warn_before:
        return CrlWarning(path, info, False, (
            f"CRL {path} (issuer {info.issuer}) expires at {info.next_update.isoformat() if info.next_update else '?'}"
            f" (in {info.expires_in}); install a fresh CRL before then"))
    return None


def revoked_by(crls: Iterable[x509.CertificateRevocationList], cert: x509.Certificate,
               issuer: x509.Certificate, now: datetime) -> bool:
    """Whether one of ``crls`` issued by ``issuer`` revokes ``cert`` (pure).

    Only CRLs that pass :func:`rserpool.security.crl.verify_crl` for
    ``issuer`` at ``now`` count.
    """
    for crl in crls:
        if crl.issuer != issuer.subject or cert.issuer != issuer.subject:
            continue
        try:
            if check_certificate(cert, crl, issuer, now) is not None:
                return True
        except CrlError:
            continue
    return False


class CrlMonitor:
    """Watches CRL files: reload on change, warn about expiry.

    Every ``interval`` seconds (the reactor's clock) ``refresh(now)`` runs
    first when given (the development PKI re-signs its CRL there before it
    expires), then the files' mtimes and sizes are compared with the last
    load; on a change all files are loaded again and handed to
    ``on_reload(crls)`` (which builds new server options; a file that fails
    to load keeps the old set in place and is logged).  After a successful
    reload every listener added with :meth:`add_reload_listener` is called
    with the new CRLs: that is the hook for re-checking channels that are
    already open (new handshakes are covered by ``on_reload``).  Each check
    also computes :func:`crl_warning` for every CRL; a warning is logged when
    it appears or changes (``warnings`` holds the current ones).
    """

    def __init__(
        self,
        clock: Any,
        paths: Sequence[str],
        on_reload: Callable[[tuple[x509.CertificateRevocationList, ...]], None],
        *,
        interval: float = 60.0,
        warn_before: timedelta = timedelta(days=7),
        stat: Callable[[str], os.stat_result] = os.stat,
        refresh: Callable[[datetime], Any] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.clock = clock
        self.paths = tuple(str(p) for p in paths)
        self.on_reload = on_reload
        self.interval = interval
        self.warn_before = warn_before
        self._stat = stat
        self._signature = self._signatures()
        self.crls: tuple[x509.CertificateRevocationList, ...] = tls.load_crls(self.paths) if self.paths else ()
        self.warnings: list[CrlWarning] = []
        self._logged: dict[str, tuple[bool, datetime | None]] = {}
        self.reloads = 0
        self.refresh = refresh
        self._listeners: list[Callable[[tuple[x509.CertificateRevocationList, ...]], Any]] = []
        self._call: Any = None

    def add_reload_listener(
            self, listener: Callable[[tuple[x509.CertificateRevocationList, ...]], Any]) -> None:
        """Call ``listener(crls)`` after every successful reload (in the order added).

        A listener that raises is logged; the others still run and the new
        CRLs stay in force.  Use :meth:`revoked` on each open channel's
        certificate to find the channels to close.
        """
        self._listeners.append(listener)

    def remove_reload_listener(self, listener: Callable[..., Any]) -> None:
        self._listeners.remove(listener)

    def revoked(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        """Whether a loaded CRL of ``issuer`` (signature, issuer and freshness
        checked) lists ``cert``.  A CRL that fails verification is ignored here
        (OpenSSL refuses new handshakes for it anyway)."""
        return revoked_by(self.crls, cert, issuer, self.now())

    def _signatures(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in self.paths:
            try:
                st = self._stat(path)
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((-1, -1))
        return tuple(out)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)

    def start(self) -> None:
        self.check()
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self._call = None
        self.check()
        self._schedule()

    def check(self) -> list[CrlWarning]:
        """Refresh, reload if a file changed, then compute (and log) the warnings."""
        if self.refresh is not None:
            try:
                self.refresh(self.now())
            except Exception as exc:
                _log.error("could not refresh the CRL ({error})", error=exc)
        signature = self._signatures()
        if signature != self._signature:
            self._signature = signature
            self._reload()
        now = self.now()
        warnings = []
        for path, crl in zip(self.paths, self.crls):
            warning = crl_warning(path, crl_info(crl, now), self.warn_before)
            if warning is None:
                self._logged.pop(path, None)
                continue
            warnings.append(warning)
            key = (warning.expired, warning.info.next_update)
            if self._logged.get(path) != key:
                self._logged[path] = key
                if warning.expired:
                    _log.error("{text}", text=warning.text)
                else:
                    _log.warn("{text}", text=warning.text)
        self.warnings = warnings
        return warnings

    def _reload(self) -> None:
        try:
            crls = tls.load_crls(self.paths)
            self.on_reload(crls)
        except Exception as exc:
            _log.error("CRL files changed but could not be reloaded ({error}); the previous CRLs stay "
                       "in force", error=exc)
            return
        self.crls = crls
        self.reloads += 1
        _log.info("reloaded {n} CRL file(s): {paths}", n=len(self.paths), paths=", ".join(self.paths))
        for listener in list(self._listeners):
            try:
                listener(crls)
            except Exception:
                _log.failure("a CRL reload listener failed")


class CrlMonitorService(Service):
    """Runs a :class:`CrlMonitor` while the registrar runs."""

    def __init__(self, monitor: CrlMonitor) -> None:
        self.monitor = monitor

    def startService(self) -> None:
        super().startService()
        self.monitor.start()

    def stopService(self) -> None:
        self.monitor.stop()
        super().stopService()


def gate_from_config(tls_conf: Any, reactor: Any,
                     trust_roots: Sequence[x509.Certificate]) -> RevocationGate | None:
    """The OCSP gate for ``[tls] ocsp`` (None when off)."""
    mode = OcspMode.parse(tls_conf["ocsp"])
    if mode is OcspMode.OFF:
        return None
    from rserpool.security.ocsp_client import OcspChecker

    checker = OcspChecker(
        reactor,
        timeout=tls_conf["ocsp_timeout"],
        policy=mode.policy,
        responder_override=tls_conf["ocsp_responder"] or None,
        allow_remote=tls_conf["ocsp_allow_remote"],
        options=OcspOptions(require_nonce=tls_conf.get("ocsp_require_nonce", False)),
    )
    if tls_conf["ocsp_allow_remote"]:
        _log.warn("OCSP responders on non-loopback hosts are queried ([tls] ocsp_allow_remote = yes)")
    _log.info("OCSP check of client certificates: {mode} fail, responder {responder}", mode=mode.value,
              responder=tls_conf["ocsp_responder"] or "from each certificate's AIA")
    return RevocationGate(checker, trust_roots)
