"""The pure ASAP cores (RFC 5352): registrar, pool element, pool user, sessions.

Each core takes decoded messages and the time and returns outputs; nothing
here touches a socket or a reactor (the shell in :mod:`rserpool.service`
does).  The names below are exported lazily: importing this package imports
no submodule until a name is used.
"""

from rserpool._exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        # registrar
        "RegistrarCore": "registrar",
        "RegistrarSettings": "registrar",
        "AsapSession": "registrar",
        # pool element registration
        "PeRegistration": "pe",
        "PeSettings": "pe",
        "PeState": "pe",
        # pool user
        "PuCore": "pu",
        "PuSettings": "pu",
        "PuError": "pu",
        "UnknownPool": "pu",
        "ResolutionRefused": "pu",
        "ResolutionTimeout": "pu",
        "NoUsablePoolElement": "pu",
        "PuBusy": "pu",
        # sessions
        "PeSession": "pe_session",
        "PeSessionSettings": "pe_session",
        "PuSession": "pu_session",
        "PuSessionSettings": "pu_session",
        "CookieSealer": "session",
        "SessionCookies": "session",
        "CookieError": "session",
        "SessionError": "session",
        "SessionClosedError": "session",
        "SessionBusyError": "session",
        # the hunt for a home registrar
        "HuntRound": "hunt",
        "StaticEntry": "hunt",
    },
)
