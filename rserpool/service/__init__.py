"""The Twisted shell: registrar, pool element, pool user and session services.

Each service runs a pure core from :mod:`rserpool.asap` over real transports
(:class:`Channel` for ASAP, TLS listeners and clients).  The names below are
exported lazily: importing this package imports no submodule (and no
reactor) until a name is used.
"""

from rserpool._exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RegistrarService": "registrar",
        "PoolElementService": "pe",
        "PoolElementError": "pe",
        "PoolElementStopped": "pe",
        "RegistrationRefusedError": "pe",
        "RegistrationFailedError": "pe",
        "AuthenticationFailedError": "pe",
        "static_hunt": "pe",
        "PoolUser": "pu",
        "SessionServer": "pe_session",
        "AcceptedSession": "pe_session",
        "listen_sessions": "pe_session",
        "SessionClient": "pu_session",
        "pe_tls_options": "pu_session",
        "Channel": "channel",
        "ChannelSettings": "channel",
        "tls_client_endpoint": "channel",
        "PeAuthenticator": "auth",
        "RegistrarAuthenticator": "auth",
        "AuthenticationError": "auth",
        "ServerHunt": "hunt",
        "RegistrarCandidates": "candidates",
        "AnnounceReceiver": "candidates",
        "listen_for_announces": "candidates",
    },
)
