"""Security building blocks: development PKI, TLS options, certificate identities.

- :mod:`rserpool.security.pki` creates CAs, certificates and CRLs (pure,
  ``cryptography`` only, time passed in).
- :mod:`rserpool.security.tls` builds Twisted/pyOpenSSL connection creators
  for servers and clients, swaps CRLs on a running server, writes opt-in
  ``SSLKEYLOGFILE`` lines and exposes the TLS exporter.
- :mod:`rserpool.security.certidentity` derives a PE identity from a verified
  client certificate (pure).

Import the submodules directly; this package imports nothing heavy.
"""
