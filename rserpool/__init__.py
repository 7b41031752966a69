"""rserpool: secure Reliable Server Pooling (RFC 5351-5356) on Twisted."""

__version__ = "0.1.0.dev0"
