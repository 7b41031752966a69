"""The gate's decisions about authentication: SRP and CHAP exchanges inside
the channel, and TLS-PSK keys tried in the handshake.

A part of :class:`rserpool.gate.Gate` (a mixin: the state, the refusal log
and the identity changes are the gate's); the failure budgets and the
per-identity slowdown are :mod:`rserpool.gate.attempts`.  Sans-IO.
"""

from __future__ import annotations

from typing import Any, Callable

from rserpool.gate.attempts import REFUSED_RATE_ADDRESS, AttemptBudgets
from rserpool.gate.facts import (
    CLOSING,
    IDENTIFYING,
    OPEN,
    REFUSED_AFTER_SUCCESS,
    REFUSED_CLOSING,
    REFUSED_IDENTITY_MISMATCH,
    Admission,
    AttemptDelayed,
    AttemptRefused,
    CloseChannel,
    Output,
)
from rserpool.identity import Identity
from rserpool.wire.codes import CAUSE_SECURITY

__all__ = ["AuthenticationDecisions"]

#: The "cause" of a refusal that closes the channel instead of answering.
_CHANNEL_CLOSED = -1
_PSK = "TLS-PSK"
_PSK_FAILED = "TLS handshake not completed (wrong key, unknown identity or given up)"


class AuthenticationDecisions:
    """SRP/CHAP attempts and results, TLS-PSK attempts (see the module docstring)."""

    # The gate's own, used here.
    attempts: AttemptBudgets
    stats: dict[str, int]
    _log: Callable[..., Any]
    _refuse: Callable[..., int]
    _close: Callable[..., list[Output]]
    _shut: Callable[[Admission], None]
    _set_identity: Callable[..., None]

    # -- TLS-PSK handshakes (the same failure budgets as SRP and CHAP) ----------------------

    def psk_attempt(self, adm: Admission, claimed: str, now: float) -> bool:
        """A TLS handshake offers a PSK for ``claimed``: may its key be used
        (before it is proven)?  Takes the attempt's tokens from the failure
        budgets; no: the handshake fails exactly as with a wrong key."""
        if adm.state is not IDENTIFYING:
            return False
        what = f"{_PSK} authentication as {claimed}"
        refused = self.attempts.take(claimed, adm.source, now)
        if refused is not None:
            self._refuse(adm, what, refused, _CHANNEL_CLOSED, now, "warn")
            return False
        adm.attempt = claimed
        return True

    def handshake_finished(self, adm: Admission, now: float) -> None:
        """The TLS handshake completed: a PSK attempt's key was right (or
        not used), so its tokens return."""
        if adm.attempt is not None and adm.state is IDENTIFYING:
            self.attempts.refund(adm.attempt, adm.source, now)
            adm.attempt = None

    def _psk_failed(self, adm: Admission, now: float) -> None:
        claimed, adm.attempt = adm.attempt, None
        assert claimed is not None
        self.stats["authentication_failed"] += 1
        self.attempts.failed(claimed, now)
        self._refuse(adm, f"{_PSK} authentication as {claimed}", _PSK_FAILED, _CHANNEL_CLOSED, now, "warn")


    # -- authentication inside the channel (SRP, CHAP) -----------------------------------------

    def authentication_attempt(self, adm: Admission, claimed: str, mechanism: str,
                               now: float) -> AttemptRefused | AttemptDelayed | None:
        """May the channel try to prove ``claimed`` with ``mechanism`` now?
        Before any credential work; takes a token from the failure budgets
        of (identity, address) and of the address (a success gives them
        back), and says how long to wait first when the identity failed
        recently, from anywhere (:mod:`rserpool.gate.attempts`)."""
        what = f"{mechanism} authentication as {claimed}"
        if adm.state is not OPEN:
            return self._refuse_attempt(adm, what, REFUSED_CLOSING, REFUSED_CLOSING, True, now)
        if adm.exchanged is not None:
            return self._refuse_attempt(adm, what, REFUSED_AFTER_SUCCESS, REFUSED_AFTER_SUCCESS, True, now)
        if adm.base is not None and claimed != adm.base.name:
            return self._refuse_attempt(adm, what, REFUSED_IDENTITY_MISMATCH,
                                        f"{REFUSED_IDENTITY_MISMATCH} ({adm.base.name})", True, now)
        refused = self.attempts.take(claimed, adm.source, now)
        if refused is not None:
            return self._refuse_attempt(adm, what, refused, refused, refused == REFUSED_RATE_ADDRESS, now)
        adm.attempt = claimed
        delay = self.attempts.delay(claimed, now)
        return AttemptDelayed(delay) if delay else None

    def _refuse_attempt(self, adm: Admission, what: str, kind: str, reason: str, final: bool,
                        now: float) -> AttemptRefused:
        """One line for the refusal; a final one shuts the channel (the
        exchange's final failure then gets the CloseChannel)."""
        self._refuse(adm, what, reason, CAUSE_SECURITY, now, "warn")
        if final and adm.state is not CLOSING:
            self._shut(adm)
        return AttemptRefused(kind, final)

    def authenticated(self, adm: Admission, identity: Identity, now: float) -> list[Output]:
        """An exchange proved ``identity``: it becomes the channel's (every
        remembered decision is forgotten) and the attempt's tokens return."""
        adm.attempt = None
        self.attempts.refund(identity.name, adm.source, now)
        if adm.state is not OPEN:
            return []
        if adm.exchanged is not None or (adm.base is not None and identity.name != adm.base.name):
            return self._close(adm, REFUSED_AFTER_SUCCESS if adm.exchanged is not None
                               else REFUSED_IDENTITY_MISMATCH, now)
        self.stats["authenticated"] += 1
        self._set_identity(adm, identity, exchanged=True)
        self._log("info", "{address} authenticated as {identity} by {mechanism}", address=adm.address,
                  identity=identity.name, mechanism=identity.mechanism)
        return []

    def authentication_failed(self, adm: Admission, claimed: str | None, mechanism: str | None,
                              reason: str, final: bool, now: float) -> list[Output]:
        """An exchange failed (its tokens stay spent).  After a success the
        channel loses its identity and closes; a final failure closes it."""
        self.stats["authentication_failed"] += 1
        if claimed is not None and adm.attempt == claimed:  # credentials were checked, and wrong
            self.attempts.failed(claimed, now)  # the identity's slowdown
        adm.attempt = None
        what = f"{mechanism or 'SRP/CHAP'} authentication as {claimed or '?'}"
        if adm.state is CLOSING:  # refused already (logged then): close
            return [CloseChannel(adm, reason)]
        if adm.exchanged is not None:
            return self._close(adm, f"{what} failed after success: {reason}", now)
        if final:
            return self._close(adm, f"{what} failed: {reason}", now)
        self._refuse(adm, what, reason, CAUSE_SECURITY, now, "warn")
        return []

    def authentication_unavailable(self, adm: Admission, claimed: str | None, mechanism: str | None,
                                   reason: str, now: float) -> list[Output]:
        """The credential backend could not answer: not the peer's failure
        (its tokens return); the exchange ends and the channel closes."""
        self.stats["authentication_unavailable"] += 1
        adm.attempt = None
        self.attempts.refund(claimed, adm.source, now)
        what = f"{mechanism or 'SRP/CHAP'} authentication as {claimed or '?'}"
        return self._close(adm, f"{what}: backend unavailable ({reason})", now, "error")
