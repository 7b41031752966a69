"""The registrar's ASAP side (RFC 5352 section 3), sans-IO.

``RegistrarCore`` holds the handlespace and one ``AsapChannelState`` per ASAP
channel.  The shell calls it with messages and the current time and carries
out what comes back:

- ``Send(state, message)``: write a message on the channel of ``state`` (an
  ``AsapChannelState``);
- ``AskAuthorizer`` (from the gate): ask the authorization plugins whether
  the channel's identity may do an action on a pool handle; the answer comes
  back through ``authorization_done(ask, answer, now)``;
- ``Close(state, reason)``: drop that channel (``Send`` and ``Close`` are
  the ones of :mod:`rserpool.outputs`, shared by every core);
- ``PoolElementAdded`` / ``PoolElementRemoved``: handlespace changes, for
  logging and the ENRP handle updates to peers (``rserpool.enrp``).

Every admission decision is the security gate's (:mod:`rserpool.gate`,
docs/gate.md): before a registration, deregistration, resolution or
unreachability report is processed, the core asks it (TLS, identity, rate
limits, the PE's addresses, the authorization cache or the authorizer), and
before the handlespace changes it asks it about the PE-identity binding.
Nothing in the handlespace changes before all of that succeeded.  The
handlespace keeps its own consistency rules (policy, transport) and its own
defensive identity check.

Timers: ``next_deadline()`` is the earliest time ``on_timer(now)`` must run
(registration expiry, keep-alive transmission and keep-alive timeout).

With ENRP (docs/takeover.md) resolutions wait while the handlespace is not
in sync with the peers (``hold_resolutions`` / ``release_resolutions``),
and a registrar that restarts in place takes a new server ID and lets its
PEs go (``restart_in_place``).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Callable

from rserpool.asap.registrar_types import (  # re-exported: the core's vocabulary
    AsapChannelState,
    Close,
    Output,
    PauseInput,
    PoolElementAdded,
    PoolElementRemoved,
    RegistrarSettings,
)
from rserpool.handlespace import (
    Handlespace,
    HandlespaceError,
    PoolElementEntry,
    PolicySettings,
)
from rserpool.gate import (
    ACTION_DEREGISTER,
    ACTION_OPAQUE,
    ACTION_REGISTER,
    ACTION_RESOLVE,
    REPORT_PROBE,
    REPORT_REMOVE,
    Admission,
    AskAuthorizer,
    Gate,
)
from rserpool.handlespace.types import LEAST_USED, ROUND_ROBIN
from rserpool.asap.registrar_sync import SyncHooks
from rserpool.outputs import Send
from rserpool.wire import (
    AsapDeregistration,
    AsapDeregistrationResponse,
    AsapEndpointKeepAlive,
    AsapEndpointKeepAliveAck,
    AsapEndpointUnreachable,
    AsapHandleResolution,
    AsapHandleResolutionResponse,
    AsapRegistration,
    AsapRegistrationResponse,
    AsapServerAnnounce,
    ErrorCause,
    OperationError,
    PoolElement,
    WireError,
    error_reply,
)
from rserpool.wire import codes
from rserpool.wire.asap import encode_registration_response, encode_resolution_response
from rserpool.wire.policy import LeastUsedPolicy, OpaquePolicy
from rserpool.fastinit import fast_constructor
from rserpool.wire.params import encode_pool_handle, pool_handle_text
from rserpool.wire.transports import OpaqueTransport, TcpTransport

__all__ = [
    "AsapChannelState",
    "Close",
    "PauseInput",
    "PoolElementAdded",
    "PoolElementRemoved",
    "RegistrarCore",
    "RegistrarSettings",
    "REMOVED_FORMAT",
    "Send",
    "policy_settings",
]

#: The core's line for a removed PE (the registrar service logs removals
#: itself, from ``PoolElementRemoved``, and leaves this one out).
REMOVED_FORMAT = "removed PE {pe_id:08x} from pool {handle}: {reason}"


def policy_settings(policy: Any) -> PolicySettings:
    """The handlespace's view of a wire Pool Member Selection Policy."""
    kind = type(policy)
    if kind is LeastUsedPolicy:  # the common case; wire values are 32-bit already
        load = policy.load
        settings = _LEAST_USED_SETTINGS.get(load)
        if settings is None:
            if len(_LEAST_USED_SETTINGS) >= 1024:
                _LEAST_USED_SETTINGS.clear()
            settings = _LEAST_USED_SETTINGS[load] = _make_settings(LEAST_USED, 0, 0, load, 0, b"")
        return settings
    if kind is OpaquePolicy:
        return PolicySettings(policy.policy_type, opaque=policy.data)
    return PolicySettings(
        policy.POLICY_TYPE,
        weight=getattr(policy, "weight", 0),
        priority=getattr(policy, "priority", 0),
        load=getattr(policy, "load", 0),
        load_degradation=getattr(policy, "load_degradation", 0),
    )


#: Least-used settings by load (immutable values, shared; at most 1,024 kept).
_LEAST_USED_SETTINGS: dict[int, PolicySettings] = {}


def _transport_use(transport: Any) -> int:
    # RFC 5354 calls TCP's second word reserved and TCP "data only"; over the
    # TCP mapping the control channel is multiplexed by PPID (RFC 5355 2.16),
    # so the word is honoured as Transport Use, as Wireshark and rsplib read it.
    return getattr(transport, "transport_use", 0)


def _addresses(transport: Any) -> tuple:
    if type(transport) is TcpTransport:  # the common case, without a failing getattr
        return (transport.address,)
    addresses = getattr(transport, "addresses", None)
    if addresses is None:
        address = getattr(transport, "address", None)
        return () if address is None else (address,)
    return addresses


def _cause(code: int, info: bytes = b"") -> OperationError:
    if code == codes.CAUSE_INVALID_VALUES and not info:
        code = codes.CAUSE_UNSPECIFIED  # RFC 5354 3.12.4: Invalid Values carries its TLV
    return OperationError((ErrorCause(code, info),))


def _offending_tlv(field: str | None, msg: AsapRegistration) -> bytes:
    """The registration's parameter that holds an invalid value (RFC 5354
    3.12.4), by the handlespace's name for it."""
    pe = msg.pool_element
    if field == "transport":
        return pe.user_transport.encode()
    if field == "policy":
        return pe.policy.encode()
    if field == "pool_handle":
        return encode_pool_handle(msg.pool_handle)
    if field in ("registration_life", "pe_id"):
        return pe.encode()  # a fixed field of the Pool Element parameter
    return b""


# Constructors without checks, for values known to be valid.
_make_send = fast_constructor(Send)
_make_added = fast_constructor(PoolElementAdded)
_make_removed = fast_constructor(PoolElementRemoved)
_make_pool_element = fast_constructor(PoolElement)
_make_registration_response = AsapRegistrationResponse._make
_make_settings = fast_constructor(PolicySettings)
_make_resolution_response = AsapHandleResolutionResponse._make  # no checks: for trusted values only


class RegistrarCore(SyncHooks):
    """ASAP registrar procedures over one handlespace (no I/O, no clock)."""

    _close_output = Close  # for SyncHooks.restart_in_place

    def __init__(
        self,
        settings: RegistrarSettings,
        handlespace: Handlespace,
        gate: Gate | None = None,
        rng: random.Random | None = None,
        log: Callable[..., None] | None = None,
        *,
        log_removals: bool = True,
    ) -> None:
        self.settings = settings
        # False: a shell that logs removals itself from ``PoolElementRemoved``
        # (the registrar service) is not given ``REMOVED_FORMAT`` lines, which
        # are then not even formatted.
        self.log_removals = log_removals
        self.handlespace = handlespace
        self.gate = gate if gate is not None else Gate()
        self.rng = rng or random.Random()
        self._log = log or (lambda *args, **kwargs: None)
        self._channel_of: dict[tuple[bytes, int], AsapChannelState] = {}
        self._awaiting_ack: dict[tuple[bytes, int], float] = {}
        self._last_keepalive: dict[tuple[bytes, int], float] = {}  # when each PE was last sent one
        # (handle, PEs, policy, message, bytes) of the last positive resolution answer.
        self._last_answer: tuple = (None, None, None, None, None)
        self.channel_states: set[AsapChannelState] = set()
        self.stats = {"registrations": 0, "reregistrations": 0, "deregistrations": 0,
                      "resolutions": 0, "refused": 0, "removed": 0, "keepalive_timeouts": 0,
                      "unreachable_reports": 0, "unauthorized": 0, "authorization_outages": 0}
        # For operators (rserpool.stats): refusals by RFC 5354 cause, and the
        # last ones (now, address, identity, request, handle, PE id, cause).
        self.refused_by_cause: dict[int, int] = {}
        self.recent_refusals: deque = deque(maxlen=64)

    # -- channels --------------------------------------------------------------------

    def open_channel(self, channel: Any, admission: Admission) -> AsapChannelState:
        """The gate opened ``admission`` (its identity is established)."""
        state = AsapChannelState(channel, admission)
        admission.door_state = state
        self.channel_states.add(state)
        return state

    def close_channel(self, state: AsapChannelState, now: float) -> list[Output]:
        """The channel is gone: its PEs can no longer be kept alive."""
        state.closed = True
        self.channel_states.discard(state)
        out: list[Output] = []
        for key in list(state.pes):
            if self._channel_of.get(key) is state:
                entry = self.handlespace.get(*key)
                if entry is not None:
                    self._remove(entry, "ASAP channel lost", out)
        state.pes.clear()
        state.pending.clear()
        return out

    def remove_pool_elements(self, state: AsapChannelState, reason: str, now: float) -> list[Output]:
        """Remove every PE registered on the channel, now (the gate's
        ``RemovePoolElements``: its identity was revoked)."""
        out: list[Output] = []
        for key in list(state.pes):
            if self._channel_of.get(key) is state:
                entry = self.handlespace.get(*key)
                if entry is not None:
                    self._remove(entry, reason, out)
        return out

    # -- input -----------------------------------------------------------------------

    def message_received(self, state: AsapChannelState, message: Any, now: float) -> list[Output]:
        handler = self._handlers.get(type(message))
        if handler is None:
            if message.PPID == codes.PPID_ENRP:
                # ENRP belongs on the ENRP port, between authenticated peers
                # (docs/enrp.md): refused as RFC 5354 section 4 says.
                self._log("refusing {message} on the ASAP channel of {address}", message=message.name,
                          address=state.address)
                cause = ErrorCause(codes.CAUSE_UNRECOGNIZED_MESSAGE, message.encode())
                return [Send(state, error_reply((cause,), codes.PPID_ENRP, self.settings.server_id,
                                                  message.sender_id))]
            if message.TYPE & 0xC0 == codes.UNKNOWN_MESSAGE_REPORT:
                # RFC 5354 section 4: a type this registrar does not process (e.g. the
                # authentication extension when it is disabled): discard and report.
                self._log("reporting unrecognized {message} from {address}", message=message.name,
                          address=state.admission.address)
                cause = ErrorCause(codes.CAUSE_UNRECOGNIZED_MESSAGE, message.encode())
                return [Send(state, error_reply((cause,), codes.PPID_ASAP))]
            self._log("ignoring {message} from {address}", message=message.name, address=state.admission.address)
            return []
        out: list[Output] = []
        handler(self, state, message, now, out)
        report = message.error_reply() if message.unrecognized else None
        if report is not None:
            out.append(Send(state, report))
        return out

    def wire_error(self, state: AsapChannelState, error: WireError) -> list[Output]:
        """A message that did not decode: report it (RFC 5354) or drop it."""
        if error.report is None:
            return []
        return [Send(state, error_reply(error, codes.PPID_ASAP))]

    def _refused(self, cause: int, state: AsapChannelState, request: str, handle: bytes | None,
                 pe_id: int | None, now: float) -> None:
        """Count a refusal (only refusals pay this, never accepted requests)."""
        self.stats["refused"] += 1
        self.refused_by_cause[cause] = self.refused_by_cause.get(cause, 0) + 1
        self.recent_refusals.append((now, state.address, state.identity, request, handle, pe_id, cause))

    # -- registration ------------------------------------------------------------------

    def _on_registration(self, state: AsapChannelState, msg: AsapRegistration, now: float, out: list) -> None:
        verdict = self.gate.admit_change(state.admission, ACTION_REGISTER, msg.pool_handle,
                                         _addresses(msg.pool_element.user_transport), now)
        if verdict is None:
            self._complete_registration(state, msg, now, out)
        elif type(verdict) is int:
            self._refuse(state, ACTION_REGISTER, msg, verdict, now, out)
        else:
            state.pending[verdict.token] = (verdict, msg)
            out.append(verdict)

    def _complete_registration(self, state: AsapChannelState, msg: AsapRegistration, now: float, out: list) -> None:
        handle, pe = msg.pool_handle, msg.pool_element
        settings = self.settings
        admission = state.admission
        if type(pe.user_transport) is OpaqueTransport:  # no address to check: the gate asks for the right
            verdict = self.gate.admit_opaque_transport(admission, handle, now)
            if type(verdict) is int:
                self._refuse(state, ACTION_OPAQUE, msg, verdict, now, out)
                return
            if verdict is not None:
                state.pending[verdict.token] = (verdict, msg)
                out.append(verdict)
                return
        handlespace = self.handlespace
        entry = handlespace.get(handle, pe.pe_id)
        if entry is not None:  # the PE-identity binding: the gate's decision
            cause = self.gate.check_owner(admission, entry.identity, ACTION_REGISTER, handle, pe.pe_id, now)
            if cause is not None:
                self._refuse(state, ACTION_REGISTER, msg, cause, now, out)
                return
        else:  # the pool quota (for a pool the principal has no PE in yet): the gate's
            held = handlespace.identity_pools_joining(admission.principal, handle)
            cause = None if held is None else self.gate.admit_new_pool(admission, handle, held, now)
            if cause is not None:
                self._refused(cause, state, "registration", handle, pe.pe_id, now)
                out.append(Send(state, AsapRegistrationResponse(handle, pe.pe_id, True, _cause(cause))))
                return
        # ``pe`` is a checked PoolElement (decoded or constructed) and the
        # server ID a checked non-zero 32-bit value: no need to check again.
        stored = _make_pool_element(pe.pe_id, settings.server_id, pe.registration_life, pe.user_transport,
                                    pe.policy, None)
        try:
            result = self.handlespace.register(
                now,
                pool_handle=handle,
                pe_id=pe.pe_id,
                settings=policy_settings(pe.policy),
                transport_type=pe.user_transport.PARAM_TYPE,
                transport_use=_transport_use(pe.user_transport),
                registration_life=pe.registration_life,
                home_server_id=settings.server_id,
                identity=admission.principal,
                payload=stored,
            )
        except HandlespaceError as exc:
            self._refused(exc.cause, state, "registration", handle, pe.pe_id, now)
            self.gate.note_refusal(admission, ACTION_REGISTER, handle, exc.detail, exc.cause, now)
            if exc.cause == codes.CAUSE_INCONSISTENT_POLICY:
                info = self._pool_policy_bytes(handle)  # RFC 5354 3.12.6
            elif exc.cause == codes.CAUSE_INCONSISTENT_TRANSPORT:
                info = self._pool_transport_bytes(handle)  # RFC 5354 3.12.8
            elif exc.cause == codes.CAUSE_INVALID_VALUES:
                info = _offending_tlv(exc.field, msg)  # RFC 5354 3.12.4
            else:
                info = b""  # the other causes carry no information
            out.append(Send(state, AsapRegistrationResponse(handle, pe.pe_id, True, _cause(exc.cause, info))))
            return
        entry = result.entry
        key = (handle, pe.pe_id)
        previous = self._channel_of.get(key)
        if previous is not state:
            if previous is not None:
                previous.pes.discard(key)
            self._channel_of[key] = state
        state.pes.add(key)
        self._awaiting_ack.pop(key, None)
        # (register() has cleared the unreachability reports.)
        self.handlespace.schedule_entry_keepalive(entry, now + self._keepalive_delay())
        self.stats["registrations" if result.created else "reregistrations"] += 1
        # The acceptance depends only on (handle, PE id), the entry's key: made
        # once per entry, it goes with it (so it is bounded by the handlespace).
        reply = entry.reply_cache
        if reply is None:
            reply = entry.reply_cache = (_make_registration_response(handle, pe.pe_id, False, None),
                                         encode_registration_response(handle, pe.pe_id))
        out.append(_make_send(state, reply[0], reply[1]))
        out.append(_make_added(entry, result.created))

    def _pool_policy_bytes(self, handle: bytes) -> bytes:
        members = self.handlespace.pool_members(handle)
        if members:
            payload = members[0].payload
            if isinstance(payload, PoolElement):
                return payload.policy.encode()
        return b""

    def _pool_transport_bytes(self, handle: bytes) -> bytes:
        members = self.handlespace.pool_members(handle)
        if members:
            payload = members[0].payload
            if isinstance(payload, PoolElement):
                return payload.user_transport.encode()
        return b""

    # -- deregistration -----------------------------------------------------------------

    def _on_deregistration(self, state: AsapChannelState, msg: AsapDeregistration, now: float, out: list) -> None:
        verdict = self.gate.admit_change(state.admission, ACTION_DEREGISTER, msg.pool_handle, None, now)
        if verdict is None:
            self._complete_deregistration(state, msg, now, out)
        elif type(verdict) is int:
            self._refuse(state, ACTION_DEREGISTER, msg, verdict, now, out)
        else:
            state.pending[verdict.token] = (verdict, msg)
            out.append(verdict)

    def _complete_deregistration(self, state: AsapChannelState, msg: AsapDeregistration, now: float, out: list) -> None:
        handle, pe_id = msg.pool_handle, msg.pe_id
        principal = state.admission.principal
        entry = self.handlespace.get(handle, pe_id)
        if entry is not None:  # the PE-identity binding: the gate's decision
            cause = self.gate.check_owner(state.admission, entry.identity, ACTION_DEREGISTER, handle, pe_id,
                                          now)
            if cause is not None:
                self._refuse(state, ACTION_DEREGISTER, msg, cause, now, out)
                return
        try:
            entry = self.handlespace.deregister(handle, pe_id, principal)
        except HandlespaceError as exc:  # the handlespace's own (defensive) check
            self._refused(exc.cause, state, "deregistration", handle, pe_id, now)
            self.gate.note_refusal(state.admission, ACTION_DEREGISTER, handle, exc.detail, exc.cause, now)
            out.append(Send(state, AsapDeregistrationResponse(handle, pe_id, _cause(exc.cause))))
            return
        if entry is not None:
            self.stats["deregistrations"] += 1
            self._forget(entry)
            out.append(PoolElementRemoved(entry, "deregistered"))
        # RFC 5352 3.2: an unknown PE counts as deregistered.
        out.append(Send(state, AsapDeregistrationResponse(handle, pe_id)))

    # -- authorization -----------------------------------------------------------------------

    def authorization_done(self, ask: AskAuthorizer, answer: bool | None, now: float,
                           reason: str = "") -> list[Output]:
        """The authorizer's answer to ``ask``: True, False, or None when no
        decision could be had (a backend outage, ``reason``): the gate
        decides what follows."""
        out: list[Output] = []
        state = ask.admission.door_state
        if state is None:
            return out
        pending = state.pending.pop(ask.token, None)
        if pending is None or state.closed:
            return out
        msg = pending[1]
        cause = self.gate.authorization_answered(ask, answer, now, reason)
        if cause is None:
            action = ask.action
            if action is ACTION_REGISTER:  # the common case, without _complete's dispatch
                self._complete_registration(state, msg, now, out)
            else:
                self._complete(state, action, msg, now, out)
        else:
            self.stats["unauthorized" if answer is not None else "authorization_outages"] += 1
            self._refuse(state, ask.action, msg, cause, now, out)
        return out

    def _complete(self, state: AsapChannelState, action: str, msg: Any, now: float, out: list) -> None:
        if action == ACTION_REGISTER or action == ACTION_OPAQUE:
            self._complete_registration(state, msg, now, out)
        elif action == ACTION_DEREGISTER:
            self._complete_deregistration(state, msg, now, out)
        else:
            self._complete_resolution(state, msg, out)

    def _refuse(self, state: AsapChannelState, action: str, msg: Any, cause: int, now: float, out: list) -> None:
        if action == ACTION_REGISTER or action == ACTION_OPAQUE:
            self._refused(cause, state, "registration", msg.pool_handle, msg.pool_element.pe_id, now)
            # The gate's only Invalid Values refusal is the PE's address
            # (RFC 5354 3.12.4: the offending TLV, the user transport).
            info = msg.pool_element.user_transport.encode() if cause == codes.CAUSE_INVALID_VALUES else b""
            reply = AsapRegistrationResponse(msg.pool_handle, msg.pool_element.pe_id, True, _cause(cause, info))
        elif action == ACTION_DEREGISTER:
            self._refused(cause, state, "deregistration", msg.pool_handle, msg.pe_id, now)
            reply = AsapDeregistrationResponse(msg.pool_handle, msg.pe_id, _cause(cause))
        else:
            self._refused(cause, state, "resolution", msg.pool_handle, None, now)
            reply = AsapHandleResolutionResponse(msg.pool_handle, error=_cause(cause))
        out.append(Send(state, reply))

    # -- handle resolution ------------------------------------------------------------------

    def _on_resolution(self, state: AsapChannelState, msg: AsapHandleResolution, now: float, out: list) -> None:
        admission = state.admission
        verdict = self.gate.admit_resolution(admission, msg.pool_handle, now)
        if verdict is None:
            self._complete_resolution(state, msg, out)
        elif type(verdict) is int:
            self._refuse(state, ACTION_RESOLVE, msg, verdict, now, out)
            if admission.paused_until > now:
                out.append(PauseInput(state, admission.paused_until))
        else:
            state.pending[verdict.token] = (verdict, msg)
            out.append(verdict)

    def _complete_resolution(self, state: AsapChannelState, msg: AsapHandleResolution, out: list) -> None:
        if self._held is not None:  # syncing with the ENRP peers (registrar_sync)
            if not self._hold(state, msg):
                out.append(Send(state, AsapHandleResolutionResponse(msg.pool_handle, error=_cause(codes.CAUSE_LACK_OF_RESOURCES))))
            return
        handle = msg.pool_handle
        items = self.settings.max_resolution_items
        try:
            entries = self.handlespace.resolve(handle, items or None)
        except HandlespaceError as exc:
            out.append(Send(state, AsapHandleResolutionResponse(handle, error=_cause(exc.cause))))
            return
        self.stats["resolutions"] += 1
        pes = tuple([entry.payload for entry in entries])
        policy = None
        if entries and entries[0].settings.policy_type != ROUND_ROBIN:
            # RFC 5352 3.3: the pool's overall policy when it is not RR
            # (the first PE's).
            policy = pes[0].policy
        last = self._last_answer
        if last[0] == handle and last[1] == pes and (last[2] is policy or last[2] == policy):
            # The same PEs as the previous answer (a stable LU or PRIO pool):
            # equal values encode to the same bytes.  (``is`` first: the
            # same policy object spares the dataclass __eq__ call.)
            out.append(_make_send(state, last[3], last[4]))
            return
        encoded = []
        for entry in entries:
            payload = entry.payload
            cached = entry.payload_cache
            if cached is None or cached[0] is not payload:
                if type(payload) is not PoolElement:
                    break
                cached = entry.payload_cache = (payload, payload.encode())
            encoded.append(cached[1])
        else:
            # Every PE is a stored PoolElement and the policy one of theirs:
            # the values the response's constructor would check are valid.
            reply = _make_resolution_response(handle, pes, policy, None, False)
            data = encode_resolution_response(handle, None if policy is None else policy.encode(), encoded)
            self._last_answer = (handle, pes, policy, reply, data)
            out.append(_make_send(state, reply, data))
            return
        out.append(Send(state, AsapHandleResolutionResponse(handle, pes, policy)))

    # -- keep-alive and unreachability -----------------------------------------------------------

    def _keepalive_delay(self) -> float:
        # RFC 5352 3.5: vary the interval randomly by plus/minus 50 percent.
        return self.settings.keepalive_interval * (0.5 + self.rng.random())

    def _on_keepalive_ack(self, state: AsapChannelState, msg: AsapEndpointKeepAliveAck, now: float, out: list) -> None:
        key = (msg.pool_handle, msg.pe_id)
        if self._channel_of.get(key) is not state:
            return  # not this channel's PE: ignore
        if self._awaiting_ack.pop(key, None) is None:
            return
        self.handlespace.schedule_keepalive(msg.pool_handle, msg.pe_id, now + self._keepalive_delay())

    def _on_unreachable(self, state: AsapChannelState, msg: AsapEndpointUnreachable, now: float, out: list) -> None:
        # Threat 2.13 / RFC 5355 2.13: reports are rate limited per reporter
        # and only distinct reporters count; the gate says what a report does
        # (by default: at most one probe per keep-alive interval, never a
        # removal without an unanswered probe).
        settings = self.settings
        self.stats["unreachable_reports"] += 1
        dropped = self.gate.admit_report(state.admission, msg.pool_handle, now)
        if dropped is not None:
            self._refused(dropped, state, "unreachability report", msg.pool_handle, msg.pe_id, now)
            return
        entry = self.handlespace.get(msg.pool_handle, msg.pe_id)
        if entry is None:
            return
        if entry.home_server_id != settings.server_id:
            # Keep-alives and removal are the home registrar's (docs/enrp.md):
            # a report about a PE learned by ENRP is only logged here.
            self._log("ENDPOINT_UNREACHABLE for {pe_id:08x} from {address}: its home is {home:08x}",
                      pe_id=msg.pe_id, address=state.address, home=entry.home_server_id)
            return
        count = self.handlespace.report_unreachable(msg.pool_handle, msg.pe_id, state.admission.rate_key, now)
        key = (msg.pool_handle, msg.pe_id)
        effect = self.gate.report_counted(count, self._last_keepalive.get(key), key in self._awaiting_ack,
                                          settings.keepalive_interval, now)
        if effect is REPORT_REMOVE:
            self._remove(entry, f"{count} unreachability reports", out)
        elif effect is REPORT_PROBE:
            # RFC 5352 3.5: probe the PE at once; no ACK in time removes it.
            self._send_keepalive(entry, now, out)

    def _send_keepalive(self, entry: PoolElementEntry, now: float, out: list) -> None:
        key = (entry.pool_handle, entry.pe_id)
        if key in self._awaiting_ack:
            return  # a probe is already outstanding
        state = self._channel_of.get(key)
        if state is None or state.closed:
            self._remove(entry, "no ASAP channel for keep-alive", out)
            return
        self._awaiting_ack[key] = now + self.settings.keepalive_timeout
        self._last_keepalive[key] = now
        self.handlespace.schedule_keepalive(entry.pool_handle, entry.pe_id, now + self.settings.keepalive_timeout)
        out.append(Send(state, AsapEndpointKeepAlive(self.settings.server_id, entry.pool_handle)))

    # -- timers -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.handlespace.next_deadline()

    def take_earliest_scheduled(self) -> float | None:
        """The earliest deadline set since the last call (see
        ``Handlespace.take_earliest_scheduled``): a timer armed at
        ``next_deadline()`` needs moving only if this is earlier."""
        return self.handlespace.take_earliest_scheduled()

    def on_timer(self, now: float, budget: int = 10_000) -> list[Output]:
        """Run what is due: expiries, keep-alives, keep-alive timeouts."""
        out: list[Output] = []
        for entry in self.handlespace.expire(now, budget):
            state = self._channel_of.get((entry.pool_handle, entry.pe_id))
            self._forget(entry)
            self.stats["removed"] += 1
            out.append(PoolElementRemoved(entry, "registration life expired"))
            if state is not None and not state.closed:
                # RFC 5352 3.2: tell the PE its registration ended.
                out.append(Send(state, AsapDeregistrationResponse(entry.pool_handle, entry.pe_id)))
        for entry in self.handlespace.due_keepalives(now, budget):
            key = (entry.pool_handle, entry.pe_id)
            deadline = self._awaiting_ack.get(key)
            if deadline is not None and deadline <= now:
                self.stats["keepalive_timeouts"] += 1
                self._remove(entry, "no ENDPOINT_KEEP_ALIVE_ACK", out)
            elif deadline is not None:
                self.handlespace.schedule_keepalive(entry.pool_handle, entry.pe_id, deadline)
            else:
                self._send_keepalive(entry, now, out)
        return out

    # -- removal ------------------------------------------------------------------------

    def _remove(self, entry: PoolElementEntry, reason: str, out: list) -> None:
        if not self.handlespace.remove_entry(entry):
            return
        self._forget(entry)
        self.stats["removed"] += 1
        if self.log_removals:
            self._log(REMOVED_FORMAT, pe_id=entry.pe_id, handle=pool_handle_text(entry.pool_handle), reason=reason)
        out.append(_make_removed(entry, reason))

    def _forget(self, entry: PoolElementEntry) -> None:
        key = (entry.pool_handle, entry.pe_id)
        self._awaiting_ack.pop(key, None)
        self._last_keepalive.pop(key, None)
        state = self._channel_of.pop(key, None)
        if state is not None:
            state.pes.discard(key)

    # -- announces ------------------------------------------------------------------------

    def server_announce(self, transports: tuple = ()) -> AsapServerAnnounce:
        return AsapServerAnnounce(self.settings.server_id, tuple(transports))

    _handlers: dict = {
        AsapRegistration: _on_registration,
        AsapDeregistration: _on_deregistration,
        AsapHandleResolution: _on_resolution,
        AsapEndpointKeepAliveAck: _on_keepalive_ack,
        AsapEndpointUnreachable: _on_unreachable,
    }

