"""chatd: a chat daemon on Twisted, speaking the framed protocol of docs/protocol.md."""

__version__ = "0.1.0"
