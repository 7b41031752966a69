"""SRP-6a (RFC 5054 arithmetic) with proofs bound to the TLS channel.

Pure: no Twisted, no sockets, no clock.  The arithmetic follows RFC 5054
section 2.5-2.6 exactly (k = H(N | PAD(g)), u = H(PAD(A) | PAD(B)),
x = H(s | H(I | ":" | P)), v = g^x); RFC 5054 defines no session key or
proofs (TLS consumes the premaster secret), so this module pins its own,
with the TLS channel binding mixed in (see ``docs/auth-exchanges.md``)::

    K  = H(PAD(S))
    M1 = H(H(N) xor H(PAD(g)) | H(I) | s | PAD(A) | PAD(B) | K | cb)
    M2 = H(PAD(A) | M1 | K | cb)

``cb`` is the 32-byte TLS exporter value of the session (the label is
``rserpool.security.exchange.EXPORTER_LABEL``).
In M1 the salt ``s`` is the only field whose length is not fixed by the
group, so the concatenation is unambiguous.

The two variable-base exponentiations with secret exponents (the server's
``(A * v^u)^b``, the client's ``(B - k*g^x)^(a + u*x)``) use OpenSSL's
constant-time ``BN_mod_exp_mont_consttime`` (:mod:`rserpool.security.modexp`)
when libcrypto loads, else gmpy2 (GMP) when it is installed, else Python's
``pow``; all give identical results.  Fixed-base exponentiations (g^a, g^b,
g^x) use a precomputed per-group table (8-bit windows; its time depends on
how many of the exponent's 8-bit digits are zero: the ephemerals a and b are
used once).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from rserpool.security import modexp as _modexp

try:  # pragma: no cover - which branch runs depends on the installation
    import gmpy2 as _gmpy2

    _to_num: Callable[[int], Any] = _gmpy2.mpz
    _powmod: Callable[[Any, Any, Any], Any] = _gmpy2.powmod
    BACKEND = "gmpy2"
except ImportError:  # pragma: no cover
    _to_num = int
    _powmod = pow
    BACKEND = "python"

__all__ = [
    "BACKEND",
    "CHANNEL_BINDING_LEN",
    "DEFAULT_GROUP",
    "DEFAULT_SALT_LEN",
    "EPHEMERAL_BITS",
    "GROUP_1024_SHA1",
    "GROUP_2048_SHA256",
    "GROUPS",
    "SrpChallenge",
    "SrpClientRun",
    "SrpCredentials",
    "SrpError",
    "SrpGroup",
    "SrpServerRun",
    "compute_client_premaster",
    "compute_client_public",
    "compute_k",
    "compute_m1",
    "compute_m2",
    "compute_server_premaster",
    "compute_server_public",
    "compute_session_key",
    "compute_u",
    "compute_verifier",
    "compute_x",
    "make_verifier",
    "normalize_text",
]

#: Length of the channel binding (a TLS exporter value).
CHANNEL_BINDING_LEN = 32
#: Length of the random salt ``make_verifier`` draws (RFC 5054 uses 16 bytes).
DEFAULT_SALT_LEN = 16
MIN_SALT_LEN = 8
MAX_SALT_LEN = 64
#: Length of the secret ephemerals a and b.
EPHEMERAL_BITS = 256
MAX_IDENTITY_LEN = 255
MAX_PASSWORD_LEN = 1024


class SrpError(ValueError):
    """An SRP computation was refused (bad peer value, wrong proof, misuse)."""


def _hex(text: str) -> int:
    return int("".join(text.split()), 16)


class _FixedBase:
    """Fixed-base exponentiation with an 8-bit windowed table (lazily built).

    ``table[i][j] = base^(j * 256^i) mod n``; an exponent of up to
    ``max_bits`` bits costs at most ``max_bits / 8`` modular multiplications
    instead of a full square-and-multiply ladder (for the 2048-bit group and
    256-bit exponents: 32 products, about 2.2 MB of table built once in
    ~15 ms, against 64 products with a 4-bit window).  Longer exponents fall
    back to powmod.
    """

    __slots__ = ("_base", "_n", "_max_bits", "_table")
    _WINDOW = 8

    def __init__(self, base: int, n: int, max_bits: int = 256) -> None:
        self._base = base
        self._n = n
        self._max_bits = max_bits
        self._table: list[list[Any]] | None = None

    def _build(self) -> list[list[Any]]:
        n = _to_num(self._n)
        current = _to_num(self._base) % n
        table = []
        for _ in range(-(-self._max_bits // self._WINDOW)):
            row = [_to_num(1), current]
            for _ in range(2, 1 << self._WINDOW):
                row.append(row[-1] * current % n)
            table.append(row)
            current = row[-1] * current % n
        return table

    def pow(self, exponent: int) -> int:
        if exponent < 0:
            raise SrpError("negative exponent")
        if exponent.bit_length() > self._max_bits:
            return int(_powmod(_to_num(self._base), _to_num(exponent), _to_num(self._n)))
        table = self._table
        if table is None:
            table = self._table = self._build()
        n = _to_num(self._n)
        result = _to_num(1)
        mask = (1 << self._WINDOW) - 1
        for row in table:
            if not exponent:
                break
            digit = exponent & mask
            if digit:
                result = result * row[digit] % n
            exponent >>= self._WINDOW
        return int(result)


@dataclass(frozen=True, slots=True)
class SrpGroup:
    """An RFC 5054 Appendix A group together with its hash function."""

    name: str
    n: int
    g: int
    hash_name: str
    n_len: int = field(init=False)
    k: int = field(init=False, repr=False)
    h_ng: bytes = field(init=False, repr=False)
    _g_pow: _FixedBase = field(init=False, repr=False, compare=False)
    #: OpenSSL's constant-time exponentiation modulo N, when libcrypto loads.
    modexp: _modexp.ModExp | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n_len = (self.n.bit_length() + 7) // 8
        object.__setattr__(self, "n_len", n_len)
        nb = self.n.to_bytes(n_len, "big")
        gb = self.g.to_bytes(n_len, "big")
        hn = hashlib.new(self.hash_name, nb).digest()
        hg = hashlib.new(self.hash_name, gb).digest()
        object.__setattr__(self, "h_ng", bytes(a ^ b for a, b in zip(hn, hg, strict=True)))
        object.__setattr__(
            self, "k", int.from_bytes(hashlib.new(self.hash_name, nb + gb).digest(), "big")
        )
        object.__setattr__(self, "_g_pow", _FixedBase(self.g, self.n))
        object.__setattr__(self, "modexp", _modexp.ModExp(self.n) if _modexp.AVAILABLE else None)

    def hash(self, *parts: bytes) -> bytes:
        h = hashlib.new(self.hash_name)
        for part in parts:
            h.update(part)
        return h.digest()

    def pad(self, value: int) -> bytes:
        """PAD(): big-endian, left-padded with zeros to the length of N."""
        return value.to_bytes(self.n_len, "big")

    def g_pow(self, exponent: int) -> int:
        """g^exponent mod N (fixed-base table)."""
        return self._g_pow.pow(exponent)

    def to_int(self, data: bytes) -> int:
        """Decode a group element sent as exactly ``n_len`` bytes."""
        if len(data) != self.n_len:
            raise SrpError(f"group element must be {self.n_len} bytes, got {len(data)}")
        return int.from_bytes(data, "big")


#: RFC 5054 Appendix A 1024-bit group with SHA-1: for the Appendix B test
#: vectors only, never offered in production.
GROUP_1024_SHA1 = SrpGroup(
    name="SRP-6a-SHA1-1024",
    n=_hex(
        """EEAF0AB9 ADB38DD6 9C33F80A FA8FC5E8 60726187 75FF3C0B 9EA2314C
        9C256576 D674DF74 96EA81D3 383B4813 D692C6E0 E0D5D8E2 50B98BE4
        8E495C1D 6089DAD1 5DC7D7B4 6154D6B6 CE8EF4AD 69B15D49 82559B29
        7BCF1885 C529F566 660E57EC 68EDBC3C 05726CC0 2FD4CBF4 976EAA9A
        FD5138FE 8376435B 9FC61D2F C0EB06E3"""
    ),
    g=2,
    hash_name="sha1",
)

#: RFC 5054 Appendix A 2048-bit group with SHA-256: the production default.
GROUP_2048_SHA256 = SrpGroup(
    name="SRP-6a-SHA256-2048",
    n=_hex(
        """AC6BDB41 324A9A9B F166DE5E 1389582F AF72B665 1987EE07 FC319294
        3DB56050 A37329CB B4A099ED 8193E075 7767A13D D52312AB 4B03310D
        CD7F48A9 DA04FD50 E8083969 EDB767B0 CF609517 9A163AB3 661A05FB
        D5FAAAE8 2918A996 2F0B93B8 55F97993 EC975EEA A80D740A DBF4FF74
        7359D041 D5C33EA7 1D281E44 6B14773B CA97B43A 23FB8016 76BD207A
        436C6481 F1D2B907 8717461A 5B9D32E6 88F87748 544523B5 24B0D57D
        5EA77A27 75D2ECFA 032CFBDB F52FB378 61602790 04E57AE6 AF874E73
        03CE5329 9CCC041C 7BC308D8 2A5698F3 A8D0C382 71AE35F8 E9DBFBB6
        94B5C803 D89F7AE4 35DE236D 525F5475 9B65E372 FCD68EF2 0FA7111F
        9E4AFF73"""
    ),
    g=2,
    hash_name="sha256",
)

DEFAULT_GROUP = GROUP_2048_SHA256
#: Groups that may be negotiated, by mechanism name (1024-bit is excluded).
GROUPS: dict[str, SrpGroup] = {GROUP_2048_SHA256.name: GROUP_2048_SHA256}


def normalize_text(value: str | bytes, limit: int, what: str) -> bytes:
    """Identities and passwords as bytes: str is NFKC-normalised, then UTF-8.

    (NFKC is the normalisation step of SASLprep, which RFC 5054 asks for;
    the prohibited-character tables are not applied.)  Bytes pass unchanged.
    """
    if isinstance(value, str):
        data = unicodedata.normalize("NFKC", value).encode("utf-8")
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        raise TypeError(f"{what} must be str or bytes")
    if len(data) > limit:
        raise SrpError(f"{what} longer than {limit} bytes")
    return data


def compute_k(group: SrpGroup) -> int:
    """k = H(N | PAD(g))."""
    return group.k


def compute_x(group: SrpGroup, salt: bytes, identity: bytes, password: bytes) -> int:
    """x = H(s | H(I | ":" | P))."""
    inner = group.hash(identity, b":", password)
    return int.from_bytes(group.hash(salt, inner), "big")


def compute_verifier(group: SrpGroup, salt: bytes, identity: bytes, password: bytes) -> int:
    """v = g^x mod N."""
    return group.g_pow(compute_x(group, salt, identity, password))


def make_verifier(
    identity: str | bytes,
    password: str | bytes,
    group: SrpGroup = DEFAULT_GROUP,
    salt: bytes | None = None,
) -> tuple[bytes, bytes]:
    """Create ``(salt, verifier)`` for a store; the verifier is PAD(v)."""
    ident = normalize_text(identity, MAX_IDENTITY_LEN, "identity")
    pw = normalize_text(password, MAX_PASSWORD_LEN, "password")
    if not ident:
        raise SrpError("empty identity")
    if salt is None:
        salt = secrets.token_bytes(DEFAULT_SALT_LEN)
    _check_salt(salt)
    return salt, group.pad(compute_verifier(group, salt, ident, pw))


def _check_salt(salt: bytes) -> None:
    if not MIN_SALT_LEN <= len(salt) <= MAX_SALT_LEN:
        raise SrpError(f"salt must be {MIN_SALT_LEN}..{MAX_SALT_LEN} bytes")


def compute_u(group: SrpGroup, a_pub: int, b_pub: int) -> int:
    """u = H(PAD(A) | PAD(B))."""
    return int.from_bytes(group.hash(group.pad(a_pub), group.pad(b_pub)), "big")


def compute_server_public(group: SrpGroup, b: int, verifier: int) -> int:
    """B = k*v + g^b mod N."""
    return (group.k * verifier + group.g_pow(b)) % group.n


def compute_client_public(group: SrpGroup, a: int) -> int:
    """A = g^a mod N."""
    return group.g_pow(a)


def compute_server_premaster(group: SrpGroup, a_pub: int, b: int, verifier: int, u: int) -> int:
    """S = (A * v^u) ^ b mod N."""
    modexp = group.modexp
    if modexp is not None:  # constant time in the secret b
        return modexp.pow(a_pub * modexp.pow(verifier, u) % group.n, b)
    n = _to_num(group.n)
    base = _to_num(a_pub) * _powmod(_to_num(verifier), _to_num(u), n) % n
    return int(_powmod(base, _to_num(b), n))


def compute_client_premaster(group: SrpGroup, b_pub: int, a: int, x: int, u: int) -> int:
    """S = (B - k * g^x) ^ (a + u * x) mod N."""
    n = group.n
    base = (b_pub - group.k * group.g_pow(x)) % n
    modexp = group.modexp
    if modexp is not None:  # constant time in the secret a + u*x (x: from the password)
        return modexp.pow(base, a + u * x)
    return int(_powmod(_to_num(base), _to_num(a + u * x), _to_num(n)))


def compute_session_key(group: SrpGroup, premaster: int) -> bytes:
    """K = H(PAD(S))."""
    return group.hash(group.pad(premaster))


def compute_m1(
    group: SrpGroup,
    identity: bytes,
    salt: bytes,
    a_pub: int,
    b_pub: int,
    key: bytes,
    channel_binding: bytes,
) -> bytes:
    """M1 = H(H(N) xor H(PAD(g)) | H(I) | s | PAD(A) | PAD(B) | K | cb)."""
    return group.hash(
        group.h_ng,
        group.hash(identity),
        salt,
        group.pad(a_pub),
        group.pad(b_pub),
        key,
        channel_binding,
    )


def compute_m2(
    group: SrpGroup, a_pub: int, m1: bytes, key: bytes, channel_binding: bytes
) -> bytes:
    """M2 = H(PAD(A) | M1 | K | cb)."""
    return group.hash(group.pad(a_pub), m1, key, channel_binding)


def _check_channel_binding(channel_binding: bytes) -> None:
    if len(channel_binding) != CHANNEL_BINDING_LEN:
        raise SrpError(f"channel binding must be {CHANNEL_BINDING_LEN} bytes")


def _check_public(group: SrpGroup, value: int, what: str) -> None:
    # RFC 5054 2.5.3/2.5.4: abort if the value mod N is 0.  Values are sent
    # as PAD()-sized integers, so we also refuse anything >= N, and the
    # trivial elements 1 and N - 1.
    if value >= group.n:
        raise SrpError(f"{what} not below N")
    if value % group.n in (0, 1, group.n - 1):
        raise SrpError(f"{what} is a trivial group element")


def _new_ephemeral() -> int:
    while True:
        value = secrets.randbits(EPHEMERAL_BITS)
        if value:
            return value


class SrpServerRun:
    """The server's half of one SRP-6a run: one challenge, one proof check.

    A run is single-use: after ``verify_client`` (successful or not) any
    further call raises, so a replayed or repeated proof is never accepted.
    """

    __slots__ = (
        "group", "_identity", "_salt", "_verifier", "_b", "_b_pub",
        "_channel_binding", "_used", "session_key",
    )

    def __init__(
        self,
        group: SrpGroup,
        identity: bytes,
        salt: bytes,
        verifier: int | bytes,
        channel_binding: bytes,
        *,
        b: int | None = None,
    ) -> None:
        _check_salt(salt)
        _check_channel_binding(channel_binding)
        if isinstance(verifier, (bytes, bytearray)):
            verifier = int.from_bytes(verifier, "big")
        if not 0 < verifier < group.n:
            raise SrpError("verifier out of range")
        self.group = group
        self._identity = identity
        self._salt = salt
        self._verifier = verifier
        self._channel_binding = channel_binding
        self._b = _new_ephemeral() if b is None else b
        self._b_pub = compute_server_public(group, self._b, verifier)
        self._used = False
        self.session_key: bytes | None = None

    @property
    def salt(self) -> bytes:
        return self._salt

    @property
    def server_public(self) -> bytes:
        """PAD(B), exactly ``group.n_len`` bytes."""
        return self.group.pad(self._b_pub)

    def verify_client(self, client_public: bytes, client_proof: bytes) -> bytes:
        """Check A and M1; return M2.  Raises SrpError on any failure."""
        if self._used:
            raise SrpError("SRP server run already used")
        self._used = True
        group = self.group
        a_pub = group.to_int(client_public)
        _check_public(group, a_pub, "A")
        u = compute_u(group, a_pub, self._b_pub)
        if u == 0:
            raise SrpError("u is zero")
        premaster = compute_server_premaster(group, a_pub, self._b, self._verifier, u)
        key = compute_session_key(group, premaster)
        expected = compute_m1(
            group, self._identity, self._salt, a_pub, self._b_pub, key, self._channel_binding
        )
        self._b = 0
        if not hmac.compare_digest(expected, client_proof):
            raise SrpError("client proof mismatch")
        self.session_key = key
        return compute_m2(group, a_pub, expected, key, self._channel_binding)


class SrpClientRun:
    """The client's half of one SRP-6a run."""

    __slots__ = (
        "group", "_identity", "_password", "_a", "_a_pub", "_channel_binding",
        "_expected_m2", "_key", "session_key",
    )

    def __init__(
        self,
        group: SrpGroup,
        identity: str | bytes,
        password: str | bytes,
        channel_binding: bytes,
        *,
        a: int | None = None,
    ) -> None:
        _check_channel_binding(channel_binding)
        self.group = group
        self._identity = normalize_text(identity, MAX_IDENTITY_LEN, "identity")
        self._password = normalize_text(password, MAX_PASSWORD_LEN, "password")
        self._channel_binding = channel_binding
        self._a = _new_ephemeral() if a is None else a
        self._a_pub = compute_client_public(group, self._a)
        self._expected_m2: bytes | None = None
        self._key: bytes | None = None
        self.session_key: bytes | None = None

    @property
    def client_public(self) -> bytes:
        return self.group.pad(self._a_pub)

    def process_challenge(self, salt: bytes, server_public: bytes) -> tuple[bytes, bytes]:
        """Take (s, B); return ``(PAD(A), M1)``.  Raises SrpError."""
        if self._expected_m2 is not None or not self._a:
            raise SrpError("SRP client run already used")
        _check_salt(salt)
        group = self.group
        b_pub = group.to_int(server_public)
        _check_public(group, b_pub, "B")
        u = compute_u(group, self._a_pub, b_pub)
        if u == 0:
            raise SrpError("u is zero")
        x = compute_x(group, salt, self._identity, self._password)
        premaster = compute_client_premaster(group, b_pub, self._a, x, u)
        self._a = 0
        self._password = b""
        key = compute_session_key(group, premaster)
        m1 = compute_m1(
            group, self._identity, salt, self._a_pub, b_pub, key, self._channel_binding
        )
        self._expected_m2 = compute_m2(group, self._a_pub, m1, key, self._channel_binding)
        self._key = key
        return self.client_public, m1

    def verify_server(self, server_proof: bytes) -> bytes:
        """Check M2 (mutual authentication); return K.  Raises SrpError."""
        expected, self._expected_m2 = self._expected_m2, b""
        if not expected:
            raise SrpError("no SRP challenge processed, or proof already checked")
        if not hmac.compare_digest(expected, server_proof):
            raise SrpError("server proof mismatch")
        self.session_key = self._key
        return self._key  # type: ignore[return-value]


# -- the server's half as twisted.cred sees it ---------------------------------------------------


class SrpChallenge:
    """One pending SRP run: what to send (``salt``, ``server_public``) and the
    single-use :class:`SrpServerRun`.  An SRP checker issues it (``ISrpChecker.challenge``);
    ``known`` is False when the salt and verifier are the fake ones of an
    unknown identity."""

    __slots__ = ("identity", "run", "known")

    def __init__(self, identity: str, run: SrpServerRun, known: bool) -> None:
        self.identity = identity
        self.run = run
        self.known = known

    @property
    def salt(self) -> bytes:
        return self.run.salt

    @property
    def server_public(self) -> bytes:
        return self.run.server_public

    def __repr__(self) -> str:
        return f"SrpChallenge({self.identity!r})"


class SrpCredentials:
    """The client's ``A`` and ``M1`` for a :class:`SrpChallenge`: the
    credentials an SRP checker verifies (``ISrpCredentials``).  After a
    successful check ``server_proof`` holds M2 for the client."""

    __slots__ = ("challenge", "identity", "client_public", "client_proof", "server_proof")

    def __init__(self, challenge: SrpChallenge, client_public: bytes, client_proof: bytes) -> None:
        self.challenge = challenge
        self.identity = challenge.identity
        self.client_public = client_public
        self.client_proof = client_proof
        self.server_proof: bytes | None = None

    def verify(self) -> bytes:
        """Check the proof: M2, or SrpError (also for an unknown identity)."""
        m2 = self.challenge.run.verify_client(self.client_public, self.client_proof)
        if not self.challenge.known:  # a fake verifier cannot verify short of a collision
            raise SrpError("unknown identity")
        self.server_proof = m2
        return m2

    def __repr__(self) -> str:
        return f"SrpCredentials({self.identity!r})"
