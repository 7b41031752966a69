"""Security building blocks: PKI, TLS options, identities, credentials.

- :mod:`rserpool.security.pki` creates CAs, certificates and CRLs (pure,
  ``cryptography`` only, time passed in); :mod:`rserpool.security.devpki`
  the development PKI.
- :mod:`rserpool.security.tls` builds Twisted/pyOpenSSL connection creators
  for servers and clients, swaps CRLs on a running server, writes opt-in
  ``SSLKEYLOGFILE`` lines and exposes the TLS exporter.
- :mod:`rserpool.security.certidentity` derives a PE identity from a verified
  client certificate (pure).
- :mod:`rserpool.security.credentials` holds the ``twisted.cred`` credentials
  and checkers (certificate, PSK, CHAP, SRP) and the :class:`Authenticator`
  that composes them; :mod:`rserpool.security.authz` the rules authorizer.

The names below are exported lazily: importing this package imports no
submodule (and nothing heavy) until a name is used.
"""

from rserpool._exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        # authorization
        "RulesAuthorizer": "authz",
        "RulesError": "authz",
        "load_rules": "authz",
        "parse_rules": "authz",
        # identities from certificates
        "CertIdentity": "certidentity",
        "CertIdentityError": "certidentity",
        "IdentityPolicy": "certidentity",
        "identity_from_certificate": "certidentity",
        "fingerprint_sha256": "certidentity",
        # twisted.cred credentials and checkers
        "Authenticator": "credentials",
        "CertificateChecker": "credentials",
        "CertificateCredentials": "credentials",
        "ChapChecker": "credentials",
        "PskChecker": "credentials",
        "PskCredentials": "credentials",
        "SrpChecker": "credentials",
        "ChapCredentials": "chap",
        "SrpCredentials": "srp",
        "SrpGroup": "srp",
        "make_verifier": "srp",
        # PSK
        "FilePskStore": "psk",
        "load_psk_file": "psk",
        # TLS
        "ClientTLSSettings": "tls",
        "ServerTLSSettings": "tls",
        "ReloadableServerOptions": "tls",
        "client_options": "tls",
        "server_options": "tls",
        # revocation
        "RevocationGate": "revocation",
        "gate_from_config": "revocation",
        # development PKI
        "DevPKIPaths": "devpki",
        "ensure_dev_pki": "devpki",
    },
)
