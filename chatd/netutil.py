"""One-line descriptions of connection failures, shared by the client and
the bench, so both name the host and the cause the same way (never a
Failure repr or a traceback).
"""

from __future__ import annotations

from twisted.internet import error
from twisted.python.failure import Failure


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_failure(
    reason: Failure,
    address: str,
    tls: bool,
    heard: bool,
    tlsHint: str = "try --tls",
) -> str:
    """One line that says why a connection failed or ended (no traceback).

    ``heard`` is whether any frame came from the server: a connection that
    closes before any did is most likely TLS talking to plain text or the
    other way round.  ``tlsHint`` is what a plain-text caller can do about
    it (the client has --tls; the bench speaks plain TCP only).
    """
    from OpenSSL import SSL
    from service_identity import VerificationError

    if reason.check(VerificationError):
        return (
            f"TLS: the certificate of {address} is not valid for that host name; "
            "refusing to connect"
        )
    if reason.check(SSL.Error):
        detail = _ssl_reason(reason.value)
        if "certificate verify failed" in detail:
            return (
                f"TLS: the certificate of {address} is not trusted "
                "(give the CA that signed it with --ca FILE)"
            )
        return f"TLS handshake with {address} failed ({detail}): is it a TLS port?"
    if reason.check(error.DNSLookupError):
        return f"cannot resolve the host name of {address}"
    if reason.check(error.ConnectionRefusedError):
        return f"cannot connect to {address}: connection refused"
    if reason.check(error.TimeoutError):
        return f"cannot connect to {address}: timed out"
    if not heard:
        hint = f"is it a TLS port? {tlsHint}" if not tls else "is it a TLS port?"
        return f"{address} closed the connection before the handshake ({hint})"
    if reason.check(error.ConnectionDone):
        return f"{address} closed the connection"
    return f"connection to {address} lost: {reason.getErrorMessage()}"


def _ssl_reason(exc: BaseException | None) -> str:
    """The OpenSSL reason string(s) of an SSL.Error, e.g. 'wrong version number'."""
    try:
        return ", ".join(str(entry[-1]) for entry in exc.args[0] if entry[-1])  # type: ignore[union-attr]
    except (AttributeError, IndexError, TypeError):
        return str(exc) or type(exc).__name__
