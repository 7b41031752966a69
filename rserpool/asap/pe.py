"""The pool element's ASAP side (RFC 5352 sections 3.1, 3.2, 3.4, 3.7), sans-IO.

``PeRegistration`` is one PE registration in one pool.  It opens no
sockets and reads no clock: the shell (``rserpool.service.pe``) passes the
time in as ``now`` and carries out what each call returns, a list of

- ``Send(channel, message)``: write an ASAP message on a channel;
- ``CloseChannel(channel, reason)``: drop a channel the PE gave up on;
- events for the application: ``NeedServer`` (start a server hunt, then
  call ``channel_up``), ``Registered``, ``RegistrationRefused``,
  ``HomeChanged``, ``RegistrationLost``, ``Deregistered``, ``RegistrationFailed`` and
  ``Ignored`` (something was dropped; for the log), with its subclass
  ``KeepAliveDropped`` (a keep-alive over the channel's rate limit).

Channels are opaque tokens to the core (the shell's ``Channel`` objects);
the core remembers which one leads to the home registrar.

Timers (RFC 5352 section 7; ``PeSettings``): T2-registration (30 s) guards
every (re-)registration, T3-deregistration (30 s) the deregistration,
T4-reregistration (10 min, or the life minus 20 s when that is smaller;
half the life for lives under 40 s) schedules the next re-registration,
counted from when the previous registration was *sent*, so it never falls
after the life the registrar granted.  ``next_deadline()`` is the earliest
time ``timer(now)`` must run.

Keep-alives (RFC 5352 3.4; RFC 5355 2.14): the PE answers at most
``PeSettings.keepalive_rate`` per second, ``keepalive_burst`` at once, per
registrar channel (a token bucket of ``rserpool.security.ratelimit``), and
on its home registrar's channel always one keep-alive per
``home_keepalive_spacing``; the rest are dropped unanswered
(``KeepAliveDropped``, counted in ``keepalives_dropped``) and their H flag
is not acted on.  A channel's bucket is released by ``channel_down``.
"""

from __future__ import annotations

import enum
import math
import secrets
from dataclasses import dataclass, replace
from typing import Any, Callable, Union

from rserpool.outputs import Ignored, Send
from rserpool.security.ratelimit import RateLimit, RateLimiter
from rserpool.wire import (
    AsapDeregistration,
    AsapDeregistrationResponse,
    AsapEndpointKeepAlive,
    AsapEndpointKeepAliveAck,
    AsapError,
    AsapRegistration,
    AsapRegistrationResponse,
    OperationError,
    PoolElement,
    REGISTRATION_LIFE_INFINITE,
)
from rserpool.wire.transports import Transport

__all__ = [
    "PeSettings", "PeState", "PeRegistration", "reregistration_delay", "random_pe_id",
    "Send", "CloseChannel", "NeedServer", "Registered", "RegistrationRefused", "HomeChanged",
    "RegistrationLost", "Deregistered", "RegistrationFailed", "KeepAliveDropped", "Output",
    "KEEPALIVE_OVER_LIMIT",
]


# -- configuration --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeSettings:
    """RFC 5352 section 7 timers and thresholds (seconds).

    ``max_reg_attempts``: registration attempts (T2 expiries or channels lost
    while waiting for the response) after which the PE reports ``RegistrationFailed``
    and stops (section 3.1); ``None`` retries for ever.

    ``keepalive_rate`` (per second) and ``keepalive_burst``: the token bucket
    that bounds the ASAP_ENDPOINT_KEEP_ALIVEs the PE answers on one registrar
    channel (RFC 5355 2.14: a rogue or compromised registrar must not make
    the PE answer as fast as it sends).  Every keep-alive on the channel
    takes a token; one that finds none is not answered.  The defaults leave
    a well-behaved registrar well alone: RFC 5352 3.5's periodic keep-alives
    are seconds apart (ours: ``keepalive_interval`` 5 s, at least 2.5 s with
    the jitter), and each further keep-alive is the immediate probe for an
    ENDPOINT_UNREACHABLE report.  Our registrar probes a PE only when it sent
    it no keep-alive within the last ``keepalive_interval``, one probe at a
    time, however many reports arrive (the security gate's rule), so any two
    of its keep-alives to one PE are at least 2.5 s apart: 0.4/s at most.
    Rate 5/s and burst 40 are far above that; a flood gets at most 40
    answers, then 5 a second.  A registrar that sends faster sees no ACK
    for the excess (and may drop the PE: RFC 5352 3.5); raise the values for
    such a registrar.

    ``home_keepalive_spacing``: on the home registrar's channel a keep-alive
    that arrives at least this long (seconds) after the last one processed
    there is answered even when the bucket is empty, so a home registrar
    that spaces its keep-alives (ours: at least half of ``keepalive_interval``
    apart, however many unreachability reports arrive) is always answered,
    and a flood from it gets at most one more answer per spacing.
    """

    t2_registration: float = 30.0
    t3_deregistration: float = 30.0
    t4_max: float = 600.0
    t4_margin: float = 20.0
    max_reg_attempts: int | None = 2
    keepalive_rate: float = 5.0
    keepalive_burst: float = 40.0
    home_keepalive_spacing: float = 1.0

    def __post_init__(self) -> None:
        if self.t2_registration <= 0 or self.t3_deregistration <= 0:
            raise ValueError("T2 and T3 must be positive")
        if self.t4_max <= 0 or self.t4_margin < 0:
            raise ValueError("T4 must be positive and its margin not negative")
        if self.max_reg_attempts is not None and self.max_reg_attempts < 1:
            raise ValueError("MAX-REG-ATTEMPT must be at least 1")
        rate, burst = self.keepalive_rate, self.keepalive_burst
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) \
                or not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"keepalive_rate must be a finite number > 0, not {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, (int, float)) \
                or not math.isfinite(burst) or burst < 1:
            raise ValueError(f"keepalive_burst must be a finite number >= 1, not {burst!r}")
        spacing = self.home_keepalive_spacing
        if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) \
                or not math.isfinite(spacing) or spacing <= 0:
            raise ValueError(f"home_keepalive_spacing must be a finite number > 0, not {spacing!r}")

    @property
    def keepalive_limit(self) -> RateLimit:
        """The keep-alive answer limit as a ``RateLimit``."""
        return RateLimit(float(self.keepalive_rate), float(self.keepalive_burst))


def reregistration_delay(life: int, settings: PeSettings) -> float:
    """T4: min(t4_max, life - margin); half the life when the life is shorter
    than twice the margin (the two meet at life = 2 * margin); t4_max for an
    infinite life."""
    if life == REGISTRATION_LIFE_INFINITE or life < 0:
        return settings.t4_max
    if life >= 2 * settings.t4_margin:
        return min(settings.t4_max, life - settings.t4_margin)
    return min(settings.t4_max, life / 2.0)


def random_pe_id(randbits: Callable[[int], int] = secrets.randbits) -> int:
    """A random non-zero 32-bit PE identifier (R2.2; ``secrets`` by default)."""
    for _ in range(64):
        value = randbits(32) & 0xFFFFFFFF
        if value:
            return value
    raise RuntimeError("the random source keeps returning zero")


class PeState(enum.Enum):
    IDLE = "idle"  # not started
    HUNTING = "hunting"  # no home registrar: waiting for channel_up
    REGISTERING = "registering"  # ASAP_REGISTRATION sent, T2 running
    REGISTERED = "registered"  # T4 running
    REFUSED = "refused"  # rejected: waits for update() (section 3.1)
    FAILED = "failed"  # MAX-REG-ATTEMPT reached: waits for retry()
    DEREGISTERING = "deregistering"  # ASAP_DEREGISTRATION sent (or to send), T3 running
    STOPPED = "stopped"


# -- outputs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CloseChannel:
    channel: Any
    reason: str


@dataclass(frozen=True, slots=True)
class NeedServer:
    """Find a (new) home registrar and call ``channel_up``.  ``failover``:
    the PE was registered and lost its home registrar."""

    reason: str
    failover: bool = False


@dataclass(frozen=True, slots=True)
class Registered:
    """A (re-)registration succeeded.  ``server_id`` is the home registrar's
    identifier when known (it is learnt from its keep-alives); ``warning``
    an Operation Error the registrar sent along with the success."""

    pe_id: int
    server_id: int | None
    reregistration: bool
    failover: bool = False
    warning: OperationError | None = None


@dataclass(frozen=True, slots=True)
class RegistrationRefused:
    """The registrar rejected the registration; the PE does not retry until
    ``update()`` corrects it (RFC 5352 section 3.1)."""

    cause: OperationError | None


@dataclass(frozen=True, slots=True)
class HomeChanged:
    """KA2.4: a keep-alive with the H flag made ``server_id`` the home registrar;
    re-registrations go over ``channel`` from now on."""

    server_id: int
    previous: int | None
    channel: Any


@dataclass(frozen=True, slots=True)
class RegistrationLost:
    """The registrar sent an unsolicited ASAP_DEREGISTRATION_RESPONSE (the
    registration life ended there); the PE re-registers at once."""

    error: OperationError | None


@dataclass(frozen=True, slots=True)
class Deregistered:
    """Stopped.  ``confirmed``: the registrar answered the deregistration
    (False: T3 expired or there was no registrar to ask; the registration
    then ends when its life does)."""

    confirmed: bool
    error: OperationError | None = None


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    """MAX-REG-ATTEMPT registration attempts failed in a row."""

    reason: str
    attempts: int


@dataclass(frozen=True, slots=True)
class KeepAliveDropped(Ignored):
    """An ``Ignored`` keep-alive: over ``channel``'s answer limit
    (``PeSettings.keepalive_rate``/``keepalive_burst``, RFC 5355 2.14).
    Not answered, and its H flag (KA2.4) not acted on.  Comes once per
    dropped keep-alive: the shell summarizes them for the log."""

    channel: Any = None


KEEPALIVE_OVER_LIMIT = "keep-alive over the rate limit: not answered (RFC 5355 2.14)"

# Channels that keep a keep-alive bucket at a time.  ``channel_down``
# releases a channel's bucket; this only bounds what a shell that forgot to
# call it could leave behind (a PE uses one channel, two during a change).
_MAX_KEEPALIVE_CHANNELS = 16

Output = Union[Send, CloseChannel, NeedServer, Registered, RegistrationRefused, HomeChanged,
               RegistrationLost, Deregistered, RegistrationFailed, Ignored, KeepAliveDropped]


# -- the state machine --------------------------------------------------------------------


class PeRegistration:
    """One PE in one pool (sans-IO)."""

    def __init__(
        self,
        pool_handle: bytes,
        user_transport: Transport,
        policy: Any,
        registration_life: int,
        settings: PeSettings | None = None,
        *,
        pe_id: int | None = None,
        randbits: Callable[[int], int] = secrets.randbits,
    ) -> None:
        if not isinstance(pool_handle, bytes) or not pool_handle:
            raise ValueError("pool_handle must be non-empty bytes")
        self.pool_handle = pool_handle
        self.settings = settings or PeSettings()
        self.pe_id = pe_id if pe_id is not None else random_pe_id(randbits)
        # Validates the identifier, transport, policy and life at once.
        self._element = PoolElement(self.pe_id, 0, registration_life, user_transport, policy)
        if not 1 <= self.pe_id <= 0xFFFFFFFF:
            raise ValueError("the PE identifier is a non-zero 32-bit number")
        self.state = PeState.IDLE
        self.home: Any = None  # the home registrar's channel
        self.home_server_id: int | None = None
        self.attempts = 0  # registration attempts since the last success
        self.registered = False  # the last registration succeeded and was not lost
        self.ever_registered = False
        self._t2: float | None = None
        self._t3: float | None = None
        self._t4: float | None = None
        self._sent_at = 0.0
        self._pending_update = False
        self._failover = False
        # RFC 5355 2.14: one keep-alive bucket per registrar channel.
        self._keepalive_limit = self.settings.keepalive_limit
        self._keepalive_buckets: dict[Any, RateLimiter] = {}
        self._home_keepalive_at: float | None = None  # the last keep-alive processed from the home
        self.keepalives_answered = 0
        self.keepalives_dropped = 0

    # -- what is registered ------------------------------------------------------------

    @property
    def element(self) -> PoolElement:
        return self._element

    @property
    def policy(self) -> Any:
        return self._element.policy

    @property
    def registration_life(self) -> int:
        return self._element.registration_life

    def registration_message(self) -> AsapRegistration:
        return AsapRegistration(self.pool_handle, self._element)

    @property
    def keepalive_channels(self) -> int:
        """How many registrar channels hold a keep-alive bucket now (each
        until its ``channel_down``)."""
        return len(self._keepalive_buckets)

    # -- timers --------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [t for t in (self._t2, self._t3, self._t4) if t is not None]
        return min(times) if times else None

    def timer(self, now: float) -> list[Output]:
        out: list[Output] = []
        if self._t3 is not None and now >= self._t3:
            self._t3 = None
            self._stop_now(out, confirmed=False, error=None)
            return out
        if self._t2 is not None and now >= self._t2:
            self._t2 = None
            self._attempt_failed("T2-registration expired", out)
        if self._t4 is not None and now >= self._t4 and self.state is PeState.REGISTERED:
            self._t4 = None
            self._register(now, out)
        return out

    # -- inputs --------------------------------------------------------------------

    def start(self, now: float) -> list[Output]:
        if self.state is not PeState.IDLE:
            raise RuntimeError(f"start() in state {self.state.value}")
        self.state = PeState.HUNTING
        self.attempts = 0
        return [NeedServer("starting")]

    def channel_up(self, channel: Any, now: float, server_id: int | None = None) -> list[Output]:
        """A channel to a registrar is ready (the hunt found one)."""
        out: list[Output] = []
        state = self.state
        if state is PeState.HUNTING:
            self._adopt(channel, server_id)
            self._register(now, out)
        elif state is PeState.DEREGISTERING and self.home is None:
            self._adopt(channel, server_id)
            out.append(Send(channel, AsapDeregistration(self.pool_handle, self.pe_id)))
        elif channel is not self.home:
            out.append(CloseChannel(channel, f"not needed ({state.value})"))
        return out

    def channel_refused(self, channel: Any, now: float) -> list[Output]:
        """The registrar refused the PE's authentication on ``channel`` after
        :meth:`channel_up` already sent the registration behind the PE's
        proof: the registrar never handled it.  The channel is forgotten as
        if it had never come up (no attempt counted, no failover); the shell
        decides what to do about the refusal."""
        if channel is None or channel is not self.home:
            return []
        self._keepalive_buckets.pop(channel, None)
        self.home = None
        self.home_server_id = None
        if self.state is PeState.REGISTERING:
            self._t2 = None
            self.attempts -= 1
            self.state = PeState.HUNTING
        return []

    def channel_down(self, channel: Any, now: float) -> list[Output]:
        """A channel closed (connection lost, or dead-peer detection)."""
        out: list[Output] = []
        self._keepalive_buckets.pop(channel, None)
        if channel is not self.home or channel is None:
            return out
        self.home = None
        self.home_server_id = None
        state = self.state
        if state is PeState.REGISTERING:
            self._t2 = None
            self._attempt_failed("home registrar's channel closed during registration", out,
                                 close=False)
        elif state is PeState.REGISTERED:
            self._t4 = None
            self.registered = False
            self._failover = True
            self.state = PeState.HUNTING
            out.append(NeedServer("home registrar's channel closed", failover=True))
        elif state is PeState.DEREGISTERING:
            # RFC 5352 3.2: deregister through another registrar, still within T3.
            out.append(NeedServer("home registrar's channel closed during deregistration"))
        return out

    def message_received(self, channel: Any, message: Any, now: float) -> list[Output]:
        out: list[Output] = []
        kind = type(message)
        if kind is AsapEndpointKeepAlive:
            self._on_keepalive(channel, message, now, out)
        elif kind is AsapRegistrationResponse:
            self._on_registration_response(channel, message, now, out)
        elif kind is AsapDeregistrationResponse:
            self._on_deregistration_response(channel, message, now, out)
        elif kind is AsapError:
            out.append(Ignored(message, "ASAP_ERROR from the registrar"))
        else:
            out.append(Ignored(message, "unexpected message"))
        return out

    def update(self, now: float, *, policy: Any = None, registration_life: int | None = None,
               user_transport: Transport | None = None) -> list[Output]:
        """Change what is registered and re-register (section 3.1).  This is
        also how a refused registration is retried after correcting it."""
        changes: dict[str, Any] = {}
        if policy is not None:
            changes["policy"] = policy
        if registration_life is not None:
            changes["registration_life"] = registration_life
        if user_transport is not None:
            changes["user_transport"] = user_transport
        if changes:
            self._element = replace(self._element, **changes)
        out: list[Output] = []
        state = self.state
        if state is PeState.REGISTERED:
            self._t4 = None
            self._register(now, out)
        elif state is PeState.REGISTERING:
            self._pending_update = True
        elif state in (PeState.REFUSED, PeState.FAILED):
            self.attempts = 0
            if self.home is not None:
                self._register(now, out)
            else:
                self.state = PeState.HUNTING
                out.append(NeedServer("retrying the registration"))
        return out

    retry = update  # after RegistrationFailed: try again (counts reset)

    def stop(self, now: float) -> list[Output]:
        """Deregister (D1-D4) and stop; T3 bounds the wait."""
        out: list[Output] = []
        state = self.state
        if state in (PeState.STOPPED, PeState.DEREGISTERING):
            return out
        self._t2 = self._t4 = None
        self._pending_update = False
        if state in (PeState.REGISTERED, PeState.REGISTERING) and self.home is not None:
            self.state = PeState.DEREGISTERING
            self._t3 = now + self.settings.t3_deregistration
            out.append(Send(self.home, AsapDeregistration(self.pool_handle, self.pe_id)))
        else:
            # Nothing registered that a registrar we can reach knows about.
            self._stop_now(out, confirmed=not (self.registered or self._failover), error=None)
        return out

    # -- internals -----------------------------------------------------------------

    def _adopt(self, channel: Any, server_id: int | None) -> None:
        self.home = channel
        self.home_server_id = server_id

    def _register(self, now: float, out: list[Output]) -> None:
        self.state = PeState.REGISTERING
        self.attempts += 1
        self._pending_update = False
        self._sent_at = now
        self._t2 = now + self.settings.t2_registration
        out.append(Send(self.home, self.registration_message()))

    def _attempt_failed(self, reason: str, out: list[Output], close: bool = True) -> None:
        if self.state is not PeState.REGISTERING:
            return
        self.registered = False
        limit = self.settings.max_reg_attempts
        if close and self.home is not None:
            out.append(CloseChannel(self.home, reason))
        self.home = None
        self.home_server_id = None
        if limit is not None and self.attempts >= limit:
            self.state = PeState.FAILED
            out.append(RegistrationFailed(reason, self.attempts))
            return
        # Section 3.1: hunt for another registrar, then register again.  A
        # re-registration that failed with its registrar is a failover too:
        # the registration that ends the hunt says so.
        self.state = PeState.HUNTING
        if self.ever_registered:
            self._failover = True
        out.append(NeedServer(reason, failover=self.ever_registered))

    def _keepalive_allowed(self, channel: Any, now: float) -> bool:
        buckets = self._keepalive_buckets
        bucket = buckets.get(channel)
        if bucket is None:
            if len(buckets) >= _MAX_KEEPALIVE_CHANNELS:
                del buckets[next(iter(buckets))]  # the oldest
            bucket = buckets[channel] = RateLimiter(self._keepalive_limit, max_keys=1)
        allowed = bucket.allow(None, now)
        if channel is self.home and channel is not None:
            # The home registrar's spaced keep-alives are always processed.
            last = self._home_keepalive_at
            if not allowed and (last is None or now - last >= self.settings.home_keepalive_spacing):
                allowed = True
            if allowed:
                self._home_keepalive_at = now
        return allowed

    def _on_keepalive(self, channel: Any, msg: AsapEndpointKeepAlive, now: float,
                      out: list[Output]) -> None:
        # RFC 5355 2.14 first: over the limit, nothing else is looked at (no
        # answer, no KA2.4 home change, no per-message log of KA1 mismatches).
        if not self._keepalive_allowed(channel, now):
            self.keepalives_dropped += 1
            out.append(KeepAliveDropped(msg, KEEPALIVE_OVER_LIMIT, channel))
            return
        if msg.pool_handle != self.pool_handle:
            out.append(Ignored(msg, "keep-alive for another pool handle (KA1)"))
            return
        if self.state in (PeState.IDLE, PeState.STOPPED):
            out.append(Ignored(msg, "keep-alive while not registered"))
            return
        if msg.pe_id is not None and msg.pe_id != self.pe_id:
            out.append(Ignored(msg, "keep-alive for another PE identifier"))
            return
        self.keepalives_answered += 1
        out.append(Send(channel, AsapEndpointKeepAliveAck(self.pool_handle, self.pe_id)))  # KA2.1-2.3
        if msg.home and msg.server_id != self.home_server_id:
            previous = self.home_server_id
            self.home_server_id = msg.server_id
            self.home = channel
            out.append(HomeChanged(msg.server_id, previous, channel))  # KA2.4
        elif channel is self.home and self.home_server_id is None:
            self.home_server_id = msg.server_id  # learn the home registrar's ID

    def _on_registration_response(self, channel: Any, msg: AsapRegistrationResponse, now: float,
                                  out: list[Output]) -> None:
        if msg.pool_handle != self.pool_handle or msg.pe_id != self.pe_id:
            out.append(Ignored(msg, "registration response for another PE"))
            return
        if self.state is not PeState.REGISTERING or channel is not self.home:
            out.append(Ignored(msg, "unexpected registration response"))
            return
        self._t2 = None
        if msg.reject:
            self.registered = False
            self.state = PeState.REFUSED
            out.append(RegistrationRefused(msg.error))
            return
        reregistration = self.ever_registered
        self.state = PeState.REGISTERED
        self.attempts = 0
        self.registered = self.ever_registered = True
        self._t4 = self._sent_at + reregistration_delay(self.registration_life, self.settings)
        out.append(Registered(self.pe_id, self.home_server_id, reregistration, self._failover, msg.error))
        self._failover = False
        if self._pending_update:
            self._t4 = None
            self._register(now, out)

    def _on_deregistration_response(self, channel: Any, msg: AsapDeregistrationResponse, now: float,
                                    out: list[Output]) -> None:
        if msg.pool_handle != self.pool_handle or msg.pe_id != self.pe_id:
            out.append(Ignored(msg, "deregistration response for another PE"))
            return
        state = self.state
        if state is PeState.DEREGISTERING:
            self._t3 = None
            self._stop_now(out, confirmed=True, error=msg.error)
        elif state in (PeState.REGISTERED, PeState.REGISTERING) and channel is self.home:
            # Section 3.2: the registrar dropped us (life expired): register again.
            self.registered = False
            out.append(RegistrationLost(msg.error))
            self._t2 = self._t4 = None
            self.attempts = 0
            self._register(now, out)
        else:
            out.append(Ignored(msg, "unexpected deregistration response"))

    def _stop_now(self, out: list[Output], *, confirmed: bool, error: OperationError | None) -> None:
        self.state = PeState.STOPPED
        self.registered = False
        self._t2 = self._t3 = self._t4 = None
        out.append(Deregistered(confirmed, error))
