"""The security gate: every admission decision of the registrar, for every door.

Sans-IO: no Twisted, no sockets, no clock (``now`` is passed in).  The
shell reports facts about a channel (which door it came in by, its address,
TLS or not, the identity its certificate, TLS-PSK key or SRP/CHAP exchange
proved, the answer of a revocation check or of an authorizer) and carries
out the decisions that come back; the doors' protocol cores (the ASAP
registrar today, ENRP peers and the admin endpoint next) ask the gate before
anything changes.  ``docs/gate.md`` is the decision table, and
``tests/test_gate_table.py`` runs every one of its rows against this module.

The gate owns:

- the channel's **state**: *identifying* (the certificate's revocation
  check or its mapping to an identity is running: input is held, bounded),
  *open*, *closing* (refused, revoked, or its identity lost: every request is
  refused);
- the channel's **identity** (name, mechanism, groups, certificate
  fingerprint) and the **authorization cache** of the channel, which is
  emptied whenever the identity changes;
- **rate limits** per identity and per source address (registrations,
  resolutions, unreachability reports, requests at the peer and admin
  doors) and the **failed-authentication budgets** per identity and per
  address;
- the **PE-identity binding** (a PE identifier registered by X can be
  re-registered or deregistered only by X);
- **revocation of live channels** (:meth:`Gate.revoke`): matching channels
  are closed and their PEs removed at once;
- one **log line per refusal** (rate limited, :mod:`rserpool.gate.refusals`).

Authorization itself is the plugins' (``IPoolAuthorizer``): the gate asks
through an :class:`~rserpool.gate.facts.AskAuthorizer` output and is told
the answer, ``True``, ``False`` or ``None`` (the backend could not answer:
refused, never remembered).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from rserpool.addresses import address_key
from rserpool.gate.facts import (
    ACTION_OPAQUE,
    ACTION_REGISTER,
    ACTION_PEER,
    CLOSING,
    IDENTIFYING,
    NOT_OPEN as _NOT_OPEN,
    OPEN,
    Admission,
    DOOR_ACTIONS,
    DOOR_ASAP,
    DOOR_PEER,
    DOORS,
    ROOM_ADDRESS,
    ROOM_TOTAL,
    REPORT_COUNTED,
    REPORT_PROBE,
    REPORT_REMOVE,
    AskAuthorizer,
    CloseChannel,
    GatePolicy,
    NeedRoom,
    Opened,
    Output,
    RemovePoolElements,
)
from rserpool.fastinit import fast_constructor
from rserpool.gate.refusals import RefusalLog, pool_handle_text
from rserpool.identity import MECH_CERTIFICATE, Identity
from rserpool.gate.attempts import AttemptBudgets
from rserpool.gate.authentication import AuthenticationDecisions
from rserpool.security.ratelimit import RateLimiter
from rserpool.wire.codes import (
    CAUSE_INVALID_VALUES,
    CAUSE_LACK_OF_RESOURCES,
    CAUSE_SECURITY,
    CAUSE_UNRECOGNIZED_MESSAGE,
)

__all__ = ["CHANNEL_CLOSED", "Gate"]

#: The "cause" of a refusal that closes the channel instead of answering.
CHANNEL_CLOSED = -1

# Refusal reasons (the log lines' text; docs/gate.md).
_NO_TLS = "channel not protected by TLS"
_NO_IDENTITY = "no authenticated identity"
_WRONG_DOOR = "not served at this door"
_NOT_AUTHORIZED = "not authorized"
_NOT_AUTHORIZED_CACHED = "not authorized (remembered)"
_UNAVAILABLE = "authorization unavailable"
_IDENTITY_CHANGED = "identity changed while the authorizer was asked"
_TOO_MANY_PENDING = "too many authorizations pending"
_RATE_ADDRESS = "rate limited (address)"
_RATE_IDENTITY = "rate limited (identity)"
_RATE = "rate limited"
_RATE_ANONYMOUS = "rate limited (all anonymous resolutions)"
_ADDRESS_MISMATCH = "registers address {address}, not the channel's"
_BOUND = "PE {pe_id:08x} is bound to another identity"
_PEER_CERTIFICATE = "a peer must present a certificate"
_HELD_TOO_MANY = "over {n} messages before its identity was established"
_POOLS = "has PEs in {n} pools already (max_pools_per_identity)"
_ANONYMOUS_FULL = "{n} anonymous channels open, the rest is kept for channels with an identity"
_CONNECTIONS = "{n} connections open"
_CONNECTIONS_HERE = "{n} connections open from this address"


#: AskAuthorizer without the dataclass __init__ (its values come from the gate's own state).
_make_ask = fast_constructor(AskAuthorizer)


def _no_log(level: str, fmt: str, **fields: Any) -> None:
    pass


def _what(action: str, handle: bytes) -> str:
    return f"{action} in pool {pool_handle_text(handle)}" if handle else action


class Gate(AuthenticationDecisions):
    """Every admission decision, for every door (see the module docstring;
    the authentication decisions are :mod:`rserpool.gate.authentication`'s)."""

    def __init__(self, policy: GatePolicy | None = None, log: Callable[..., Any] | None = None) -> None:
        self.policy = policy = policy or GatePolicy()
        self._log = log or _no_log
        self.refusals = RefusalLog(self._log, policy.refusal_log_per_address, policy.refusal_log_total)
        self._registrations = RateLimiter(policy.registration_rate)
        self._registrations_by_address = RateLimiter(policy.registration_rate_per_address)
        self._resolutions = RateLimiter(policy.resolution_rate)
        self._anonymous_resolutions = RateLimiter(policy.anonymous_resolution_rate, max_keys=1)
        self._reports = RateLimiter(policy.unreachable_rate)
        self._door_requests = RateLimiter(policy.door_request_rate)
        self.attempts = AttemptBudgets(policy.attempts_per_identity_and_address, policy.attempts_per_address,
                                       policy.identity_slowdown)
        self.channels: set[Admission] = set()
        self.connections: dict[str, int] = {}  # open connections per address key
        self.anonymous = 0  # open anonymous ASAP channels
        self._next_token = 1
        #: Refusals by RFC 5354 cause (0: dropped without reply, -1: channel closed).
        self.refused: dict[int, int] = {}
        self.stats = {"authenticated": 0, "authentication_failed": 0, "authentication_unavailable": 0,
                      "authorizer_unavailable": 0, "revoked": 0}

    # -- refusals -----------------------------------------------------------------------------

    def _refuse(self, adm: Admission, what: str, reason: str, cause: int, now: float,
                level: str = "info", dropped: bool = False) -> int:
        self.refused[cause] = self.refused.get(cause, 0) + 1
        self.refusals.refused(now, what, adm.address, adm.who, reason, cause, level, dropped, adm.peer)
        return cause

    def _close(self, adm: Admission, reason: str, now: float, level: str = "warn") -> list[Output]:
        """Refuse the channel itself (logged once): it closes, and every
        later request on it is refused."""
        if adm.state is not CLOSING:
            self._refuse(adm, "channel", reason, CHANNEL_CLOSED, now, level)
            self._shut(adm)
        return [CloseChannel(adm, reason)]

    def _shut(self, adm: Admission) -> None:
        self._set_identity(adm, None)
        adm.state = CLOSING
        adm.change_barrier = (CAUSE_SECURITY, _NOT_OPEN[CLOSING])
        self._track(adm)

    def note_refusal(self, adm: Admission, action: str, handle: bytes, reason: str, cause: int,
                     now: float) -> None:
        """A door refused a request for a reason of its own (the handlespace's
        consistency rules, its quotas): logged like the gate's refusals, so
        that every refusal has one line."""
        self._refuse(adm, _what(action, handle), reason, cause, now)

    # -- channels ------------------------------------------------------------------------------

    def open_channel(self, door: str, address: str, tls: bool, now: float, *, channel: Any = None,
                     fingerprint: str | None = None, port: int | None = None) -> Admission | None:
        """A connection came in by ``door`` from ``address`` (the host;
        ``port``, when given, only shows in log lines): its admission
        (identity being established), or None when the connection limits
        are reached (logged; the shell drops the connection)."""
        for known in DOORS:  # the constant itself: doors are compared with ``is``
            if door == known:
                break
        else:
            raise ValueError(f"unknown door {door!r} (known: {', '.join(DOORS)})")
        policy = self.policy
        key = address_key(address, policy.ipv6_prefix)  # an IPv6 /64 is one address
        peer = "" if port is None else (f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
        adm = Admission(known, address, tls, fingerprint, key, peer)
        adm.channel = channel
        if len(self.channels) >= policy.max_connections:
            self._refuse(adm, "connection", _CONNECTIONS.format(n=len(self.channels)), CHANNEL_CLOSED, now, "warn")
            return None
        open_here = self.connections.get(key, 0)
        if open_here >= policy.max_connections_per_address:
            self._refuse(adm, "connection", _CONNECTIONS_HERE.format(n=open_here), CHANNEL_CLOSED, now, "warn")
            return None
        self.connections[key] = open_here + 1
        self.channels.add(adm)
        return adm

    def room_needed(self, address: str) -> str | None:
        """Which connection limit a newcomer from ``address`` would meet
        (``ROOM_ADDRESS`` first, then ``ROOM_TOTAL``), or None: the shell may
        first drop a channel that ``evictable`` allows, from the same address
        key for ``ROOM_ADDRESS``."""
        policy = self.policy
        if self.connections.get(address_key(address, policy.ipv6_prefix), 0) >= policy.max_connections_per_address:
            return ROOM_ADDRESS
        if len(self.channels) >= policy.max_connections:
            return ROOM_TOTAL
        return None

    def evictable(self, adm: Admission, last_message_at: float, holds_pes: bool) -> float | None:
        """From when the channel may give its slot to a newcomer (None:
        never): an open anonymous ASAP channel that holds no PE, once it has
        sent nothing for ``evict_idle_after`` seconds.  Channels with an
        identity, PEs, or whose identity is being established stay."""
        if adm.state is not OPEN or adm.identity is not None or adm.door is not DOOR_ASAP or holds_pes:
            return None
        return last_message_at + self.policy.evict_idle_after

    def no_room(self, adm: Admission, now: float) -> list[Output]:
        """After a ``NeedRoom``: no anonymous channel could make room."""
        if adm.state is not IDENTIFYING:
            return []
        return self._close(adm, _ANONYMOUS_FULL.format(n=self.anonymous), now, "info")

    @property
    def anonymous_limit(self) -> int:
        """How many open anonymous ASAP channels there may be."""
        policy = self.policy
        return policy.max_connections - int(policy.max_connections * policy.authenticated_reserve)

    def _track(self, adm: Admission) -> None:
        """Keep ``anonymous`` (open anonymous ASAP channels) up to date."""
        now_anonymous = adm.state is OPEN and adm.identity is None and adm.door is DOOR_ASAP
        if now_anonymous is not adm.anonymous:
            adm.anonymous = now_anonymous
            self.anonymous += 1 if now_anonymous else -1

    def certificate_seen(self, adm: Admission, fingerprint: str) -> None:
        """The TLS handshake finished with a client certificate (verified by
        TLS; its OCSP check and mapping may still be running)."""
        adm.fingerprint = fingerprint

    def identified(self, adm: Admission, identity: Identity | None, now: float) -> list[Output]:
        """The channel's TLS identity (certificate or TLS-PSK), or None: it
        opens, or closes when its door does not take it."""
        if adm.state is not IDENTIFYING:
            return []
        if adm.door is not DOOR_ASAP:
            if not adm.tls:
                return self._close(adm, _NO_TLS, now)
            if identity is None:
                return self._close(adm, _NO_IDENTITY, now)
            if adm.door is DOOR_PEER and identity.mechanism != MECH_CERTIFICATE:
                return self._close(adm, _PEER_CERTIFICATE, now)
        elif identity is None and self.anonymous >= self.anonymous_limit:
            return [NeedRoom(adm)]  # the rest is kept for channels with an identity
        adm.base = identity
        if identity is not None and adm.fingerprint is None:
            adm.fingerprint = identity.fingerprint
        adm.state = OPEN
        self._set_identity(adm, identity)
        return [Opened(adm)]

    def identification_refused(self, adm: Admission, reason: str, now: float) -> list[Output]:
        """The certificate's revocation check (or its mapping) said no, or
        could not answer under a hard-fail policy: the channel closes."""
        if adm.state is not IDENTIFYING:
            return []
        return self._close(adm, reason, now)

    def hold(self, adm: Admission, now: float) -> list[Output]:
        """Input arrived while the identity is being established: the shell
        keeps it (nothing) or, past the bound, closes the channel."""
        if adm.state is not IDENTIFYING:
            return []
        adm.held += 1
        if adm.held > self.policy.max_held_per_channel:
            return self._close(adm, _HELD_TOO_MANY.format(n=self.policy.max_held_per_channel), now)
        return []

    def channel_closed(self, adm: Admission, now: float | None = None) -> None:
        """The channel is gone (``now``: when, for the failure accounting of
        a TLS-PSK handshake that never finished)."""
        if adm.state is IDENTIFYING and adm.attempt is not None and now is not None:
            self._psk_failed(adm, now)
        if adm in self.channels:
            self.channels.discard(adm)
            key = adm.source
            left = self.connections.get(key, 1) - 1
            if left > 0:
                self.connections[key] = left
            else:
                self.connections.pop(key, None)
        adm.state = CLOSING
        adm.change_barrier = (CAUSE_SECURITY, _NOT_OPEN[CLOSING])
        adm.allowed = {}
        self._track(adm)

    def _set_identity(self, adm: Admission, identity: Identity | None, exchanged: bool = False) -> None:
        """Every change of identity goes through here: a new epoch and an
        empty authorization cache (decisions for another identity, or for
        no identity, must never be reused)."""
        if identity is None:
            adm.identity = adm.mechanism = None
            adm.groups = frozenset()
            adm.principal = "addr:" + adm.address
            adm.rate_key = "addr:" + adm.source
            adm.exchanged = None
        else:
            adm.identity = identity.name
            adm.mechanism = identity.mechanism
            adm.groups = identity.groups
            adm.principal = adm.rate_key = identity.name
            if exchanged:
                adm.exchanged = identity
        adm.epoch += 1
        adm.allowed = {}
        adm.change_barrier = self._barrier(adm)
        self._track(adm)

    def _barrier(self, adm: Admission) -> tuple[int, str] | None:
        """Why no registration or deregistration may come from this channel
        (cause, reason), or None: computed when the channel's facts change."""
        if adm.state is not OPEN:
            return CAUSE_SECURITY, _NOT_OPEN[adm.state]
        if adm.door is not DOOR_ASAP:
            return CAUSE_UNRECOGNIZED_MESSAGE, _WRONG_DOOR
        if not adm.tls and not self.policy.allow_insecure_channels:
            return CAUSE_SECURITY, _NO_TLS  # RFC 5355 2.15: nothing unsecured reaches a secure registrar
        if adm.identity is None and not self.policy.allow_unauthenticated:
            return CAUSE_SECURITY, _NO_IDENTITY
        return None

    # -- requests ----------------------------------------------------------------------------------

    def admit_change(self, adm: Admission, action: str, handle: bytes, addresses: Iterable[Any] | None,
                     now: float) -> None | int | AskAuthorizer:
        """A registration (with the PE's transport ``addresses``) or a
        deregistration (``addresses`` None): None to go ahead, a cause to
        refuse with, or the question to ask the authorizer first."""
        barrier = adm.change_barrier
        if barrier is not None:
            return self._refuse(adm, _what(action, handle), barrier[1], barrier[0],
                                now)
        if not self._registrations_by_address.allow(adm.source, now):
            return self._refuse(adm, _what(action, handle), _RATE_ADDRESS,
                                CAUSE_LACK_OF_RESOURCES, now)
        identity = adm.identity
        if identity is not None and not self._registrations.allow(identity, now):
            return self._refuse(adm, _what(action, handle), _RATE_IDENTITY,
                                CAUSE_LACK_OF_RESOURCES, now)
        if addresses is not None and self.policy.check_pe_addresses:
            for address in addresses:
                text = adm.address_text(address)
                if text != adm.address:
                    return self._refuse(adm, _what(action, handle),
                                        _ADDRESS_MISMATCH.format(address=text), CAUSE_INVALID_VALUES, now)
        decided = adm.allowed.get((action, handle))
        if decided is True:
            return None
        return self._authorize(adm, action, handle, decided, now)

    def admit_new_pool(self, adm: Admission, handle: bytes, pools_held: int, now: float) -> None | int:
        """A registration (already admitted) would put the channel's
        principal in a pool where it has no PE yet, ``pools_held`` being the
        number of pools it has PEs in: refused with cause 0x6 at
        ``max_pools_per_identity``, so that a few identities cannot fill the
        pool table (``max_pools``) for everyone."""
        limit = self.policy.max_pools_per_identity
        if pools_held < limit:
            return None
        return self._refuse(adm, _what(ACTION_REGISTER, handle), _POOLS.format(n=pools_held),
                            CAUSE_LACK_OF_RESOURCES, now)

    def admit_opaque_transport(self, adm: Admission, handle: bytes, now: float) -> None | int | AskAuthorizer:
        """A registration (already admitted) whose user transport is an
        Opaque Transport: no address in it can be checked against the
        channel's, so the authorizer must allow ``opaque-transport`` for the
        identity and pool (default deny; ``all`` never grants it)."""
        decided = adm.allowed.get((ACTION_OPAQUE, handle))
        if decided is True:
            return None
        return self._authorize(adm, ACTION_OPAQUE, handle, decided, now)

    def admit_resolution(self, adm: Admission, handle: bytes, now: float) -> None | int | AskAuthorizer:
        """A handle resolution (anonymous pool users welcome): per requester
        (identity, or address key) and, for anonymous ones, all together.
        A rate-limited channel is also paused (``adm.paused_until``: the
        shell reads nothing more from it before then)."""
        if adm.state is not OPEN:
            return self._refuse(adm, _what("resolve", handle), _NOT_OPEN[adm.state], CAUSE_SECURITY, now)
        if adm.door is not DOOR_ASAP:
            return self._refuse(adm, _what("resolve", handle), _WRONG_DOOR, CAUSE_UNRECOGNIZED_MESSAGE, now)
        if not adm.tls and not self.policy.allow_insecure_channels:
            return self._refuse(adm, _what("resolve", handle), _NO_TLS, CAUSE_SECURITY, now)
        if not self._resolutions.allow(adm.rate_key, now):
            adm.paused_until = now + self.policy.rate_limited_pause
            return self._refuse(adm, _what("resolve", handle), _RATE, CAUSE_LACK_OF_RESOURCES, now)
        if adm.identity is None and not self._anonymous_resolutions.allow(None, now):
            adm.paused_until = now + self.policy.rate_limited_pause
            return self._refuse(adm, _what("resolve", handle), _RATE_ANONYMOUS, CAUSE_LACK_OF_RESOURCES, now)
        if not self.policy.authorize_resolution:
            return None
        decided = adm.allowed.get(("resolve", handle))
        if decided is True:
            return None
        return self._authorize(adm, "resolve", handle, decided, now)

    def admit_report(self, adm: Admission, handle: bytes, now: float) -> int | None:
        """An ENDPOINT_UNREACHABLE report (RFC 5355 2.13): None to count it,
        else the cause it is dropped for (never answered)."""
        what = _what("unreachability report", handle)
        if adm.state is not OPEN:
            return self._refuse(adm, what, _NOT_OPEN[adm.state], CAUSE_SECURITY, now, dropped=True)
        if adm.door is not DOOR_ASAP:
            return self._refuse(adm, what, _WRONG_DOOR, CAUSE_UNRECOGNIZED_MESSAGE, now, dropped=True)
        if self.policy.unreachable_requires_identity and adm.identity is None:
            return self._refuse(adm, what, _NO_IDENTITY, CAUSE_SECURITY, now, dropped=True)
        if not self._reports.allow(adm.rate_key, now):
            return self._refuse(adm, what, _RATE, CAUSE_LACK_OF_RESOURCES, now, dropped=True)
        return None

    def report_counted(self, reporters: int, last_keepalive: float | None, probing: bool,
                       keepalive_interval: float, now: float) -> str:
        """What an admitted unreachability report does to its PE (RFC 5355
        2.13), given the facts: ``reporters`` distinct reporters so far,
        when the PE was last sent a keep-alive (None: never), whether a probe
        is outstanding.  By default reports never remove a PE: they may
        probe it, at most once per keep-alive interval however many reports
        come, so the registrar's keep-alives stay within what the PE
        library's keep-alive limit (RFC 5355 2.14) always answers, and only
        a probe left unanswered removes the PE."""
        policy = self.policy
        if not policy.unreachable_removal_needs_failed_probe and reporters >= policy.max_bad_pe_reports:
            return REPORT_REMOVE
        if probing or (last_keepalive is not None and now - last_keepalive < keepalive_interval):
            return REPORT_COUNTED
        return REPORT_PROBE

    def admit(self, adm: Admission, action: str, handle: bytes, now: float) -> None | int | AskAuthorizer:
        """A request at the peer or admin door (``peer``, ``admin``): TLS, an
        authenticated identity (a certificate for peers), the door's rate,
        then the authorizer."""
        what = _what(action, handle)
        if action not in DOOR_ACTIONS[adm.door]:
            return self._refuse(adm, what, _WRONG_DOOR, CAUSE_UNRECOGNIZED_MESSAGE, now)
        if adm.state is not OPEN:
            return self._refuse(adm, what, _NOT_OPEN[adm.state], CAUSE_SECURITY, now)
        if not adm.tls:
            return self._refuse(adm, what, _NO_TLS, CAUSE_SECURITY, now)
        if adm.identity is None:
            return self._refuse(adm, what, _NO_IDENTITY, CAUSE_SECURITY, now)
        if action == ACTION_PEER and adm.mechanism != MECH_CERTIFICATE:
            return self._refuse(adm, what, _PEER_CERTIFICATE, CAUSE_SECURITY, now)
        if not self._door_requests.allow(adm.rate_key, now):
            return self._refuse(adm, what, _RATE, CAUSE_LACK_OF_RESOURCES, now)
        decided = adm.allowed.get((action, handle))
        if decided is True:
            return None
        return self._authorize(adm, action, handle, decided, now)

    def _authorize(self, adm: Admission, action: str, handle: bytes, decided: bool | None,
                   now: float) -> int | AskAuthorizer:
        # (The request's text for a refusal line is made only for a refusal.)
        if decided is False:
            return self._refuse(adm, _what(action, handle), _NOT_AUTHORIZED_CACHED, CAUSE_SECURITY, now)
        if adm.pending >= self.policy.max_pending_per_channel:
            return self._refuse(adm, _what(action, handle), _TOO_MANY_PENDING, CAUSE_LACK_OF_RESOURCES, now)
        adm.pending += 1
        token = self._next_token
        self._next_token = token + 1
        return _make_ask(token, adm, action, adm.identity, adm.groups, handle, adm.epoch)

    def authorization_answered(self, ask: AskAuthorizer, answer: bool | None, now: float,
                               reason: str = "") -> None | int:
        """The authorizer's answer: True, False, or None when it could not
        decide (a backend outage: refused like "no", logged as an outage,
        not remembered, so a retry asks again).  None: go ahead; else the
        cause to refuse with."""
        adm = ask.admission
        if adm.pending > 0:
            adm.pending -= 1
        action, handle = ask.action, ask.pool_handle
        if adm.state is not OPEN:
            return self._refuse(adm, _what(action, handle), _NOT_OPEN[adm.state], CAUSE_SECURITY, now)
        if ask.epoch != adm.epoch:
            return self._refuse(adm, _what(action, handle), _IDENTITY_CHANGED, CAUSE_SECURITY, now)
        if answer is None:
            self.stats["authorizer_unavailable"] += 1
            return self._refuse(adm, _what(action, handle),
                                f"{_UNAVAILABLE} ({reason})" if reason else _UNAVAILABLE, CAUSE_SECURITY, now,
                                "error")
        allowed = answer is True
        cache = adm.allowed
        if len(cache) < self.policy.max_cached_decisions:
            cache[(action, handle)] = allowed
        if allowed:
            return None
        return self._refuse(adm, _what(action, handle), _NOT_AUTHORIZED, CAUSE_SECURITY, now)

    def check_owner(self, adm: Admission, owner: str | None, action: str, handle: bytes, pe_id: int,
                    now: float) -> None | int:
        """The PE-identity binding (threat 2.3): ``owner`` is the principal
        the PE identifier is bound to (None: not registered).  None: go ahead."""
        if owner is None or owner == adm.principal:
            return None
        return self._refuse(adm, _what(action, handle), _BOUND.format(pe_id=pe_id),
                            CAUSE_SECURITY, now)

    # -- revocation --------------------------------------------------------------------------------

    def revoke(self, *, identity: str | None = None, fingerprint: str | None = None, reason: str,
               now: float) -> list[Output]:
        """A certificate (by SHA-256 fingerprint) or an identity was revoked:
        every live channel it authenticated closes, and its PEs go at once."""
        if identity is None and fingerprint is None:
            raise ValueError("revoke what? give an identity or a fingerprint")
        out: list[Output] = []
        for adm in list(self.channels):
            if adm.state is CLOSING:
                continue
            if not ((identity is not None and adm.identity == identity)
                    or (fingerprint is not None and adm.fingerprint == fingerprint)):
                continue
            self.stats["revoked"] += 1
            if adm.state is OPEN and adm.door is DOOR_ASAP:  # only the ASAP door registers PEs
                out.append(RemovePoolElements(adm, reason))
            out.extend(self._close(adm, f"revoked: {reason}", now))
        return out
