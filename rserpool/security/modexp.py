"""Constant-time modular exponentiation for SRP, from OpenSSL's libcrypto.

SRP-6a's cost is two 2048-bit exponentiations per exchange with secret
exponents: the registrar's ephemeral ``b``, and on the PE the password-derived
``x`` inside ``a + u*x``.  GMP's ``mpz_powm`` (gmpy2) takes time that depends
on the exponent's bits; OpenSSL's ``BN_mod_exp_mont_consttime`` does not, and
on this project's machines it is also 20-30 % faster for 256-bit exponents
(``benchmarks/README.md``).  It is reached through cffi (a dependency of
``cryptography``) in ABI mode: the system's ``libcrypto.so.3`` is opened and
only OpenSSL's public, long-stable ``BN_*`` functions are declared here.

:class:`ModExp` works for one odd modulus (a Montgomery context is prepared
once).  :data:`AVAILABLE` is false, with :data:`REASON`, when cffi or
libcrypto cannot be loaded; callers (``rserpool.security.srp``) then use
gmpy2 or Python's ``pow``, which give identical results.

Pure: no Twisted, no clock.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AVAILABLE", "REASON", "ModExp"]

_DECLARATIONS = """
typedef struct bignum_st BIGNUM;
typedef struct bignum_ctx BN_CTX;
typedef struct bn_mont_ctx_st BN_MONT_CTX;
BIGNUM *BN_new(void);
void BN_free(BIGNUM *a);
void BN_clear_free(BIGNUM *a);
BIGNUM *BN_bin2bn(const unsigned char *s, int len, BIGNUM *ret);
int BN_bn2binpad(const BIGNUM *a, unsigned char *to, int tolen);
BN_CTX *BN_CTX_new(void);
void BN_CTX_free(BN_CTX *c);
BN_MONT_CTX *BN_MONT_CTX_new(void);
void BN_MONT_CTX_free(BN_MONT_CTX *mont);
int BN_MONT_CTX_set(BN_MONT_CTX *mont, const BIGNUM *mod, BN_CTX *ctx);
int BN_mod_exp_mont_consttime(BIGNUM *rr, const BIGNUM *a, const BIGNUM *p, const BIGNUM *m,
                              BN_CTX *ctx, BN_MONT_CTX *in_mont);
"""

#: OpenSSL 3, then 1.1 (same BN API).
_LIBRARIES = ("libcrypto.so.3", "libcrypto.so.1.1")


def _load() -> tuple[Any, Any, str]:
    try:
        from cffi import FFI
    except ImportError as exc:  # pragma: no cover - cryptography depends on cffi
        return None, None, f"cffi is not installed ({exc})"
    ffi = FFI()
    ffi.cdef(_DECLARATIONS)
    problems = []
    for name in _LIBRARIES:
        try:
            return ffi, ffi.dlopen(name), ""
        except OSError as exc:
            problems.append(f"{name}: {exc}")
    return None, None, "libcrypto not found (" + "; ".join(problems) + ")"


_FFI, _LIB, REASON = _load()
AVAILABLE = _LIB is not None


class ModExpError(ArithmeticError):
    """OpenSSL refused an operation (out of memory, or a bad modulus)."""


class ModExp:
    """``base ** exponent % modulus`` in constant time for one odd modulus."""

    __slots__ = ("_modulus", "_length", "_n", "_mont")

    def __init__(self, modulus: int) -> None:
        if not AVAILABLE:
            raise ModExpError(f"OpenSSL modular exponentiation unavailable: {REASON}")
        if modulus < 3 or modulus % 2 == 0:
            raise ValueError("the modulus must be odd and at least 3")
        self._modulus = modulus
        self._length = length = (modulus.bit_length() + 7) // 8
        raw = modulus.to_bytes(length, "big")
        self._n = _FFI.gc(_LIB.BN_bin2bn(raw, length, _FFI.NULL), _LIB.BN_free)
        self._mont = _FFI.gc(_LIB.BN_MONT_CTX_new(), _LIB.BN_MONT_CTX_free)
        ctx = _LIB.BN_CTX_new()
        try:
            if self._n == _FFI.NULL or self._mont == _FFI.NULL or ctx == _FFI.NULL \
                    or _LIB.BN_MONT_CTX_set(self._mont, self._n, ctx) != 1:
                raise ModExpError("OpenSSL could not prepare the Montgomery context")
        finally:
            _LIB.BN_CTX_free(ctx)

    @property
    def modulus(self) -> int:
        return self._modulus

    def pow(self, base: int, exponent: int) -> int:
        """``base ** exponent % modulus`` (``exponent`` >= 0)."""
        if exponent < 0:
            raise ValueError("negative exponent")
        length = self._length
        base_bytes = (base % self._modulus).to_bytes(length, "big")
        exp_bytes = exponent.to_bytes((exponent.bit_length() + 7) // 8 or 1, "big")
        lib = _LIB
        ctx = lib.BN_CTX_new()
        a = lib.BN_bin2bn(base_bytes, length, _FFI.NULL)
        p = lib.BN_bin2bn(exp_bytes, len(exp_bytes), _FFI.NULL)
        r = lib.BN_new()
        try:
            if _FFI.NULL in (ctx, a, p, r):
                raise ModExpError("OpenSSL could not allocate")
            if lib.BN_mod_exp_mont_consttime(r, a, p, self._n, ctx, self._mont) != 1:
                raise ModExpError("BN_mod_exp_mont_consttime failed")
            out = _FFI.new("unsigned char[]", length)
            if lib.BN_bn2binpad(r, out, length) != length:
                raise ModExpError("BN_bn2binpad failed")
            return int.from_bytes(_FFI.buffer(out, length), "big")
        finally:
            # The exponent is a secret (b, or a + u*x): its copy is wiped.
            lib.BN_clear_free(p)
            lib.BN_clear_free(r)
            lib.BN_free(a)
            lib.BN_CTX_free(ctx)
