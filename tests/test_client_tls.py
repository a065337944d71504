"""chatd-client over TLS against a daemon with plain and TLS listeners at once.

A throw-away CA and server certificates are made with ``cryptography`` for
each test run: one for DNS ``localhost`` and IP ``127.0.0.1``, one for a name
that is not ours, and a second CA that signed nothing of the server's.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer
from twisted.trial import unittest

from tests.clientproc import daemonLogs, spawn
from tests.daemon import Daemon

PEM = serialization.Encoding.PEM


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject, issuer, key, signer, names=None, ca=False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    return builder.sign(signer, hashes.SHA256())


def makeCertificates(directory: Path) -> dict[str, Path]:
    """Write ca.pem, other-ca.pem and two server key+certificate pairs."""
    import ipaddress

    paths: dict[str, Path] = {}
    authorities = {}
    for label in ("ca", "other-ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            f"chatd test {label}", f"chatd test {label}", key, key, ca=True
        )
        authorities[label] = (key, cert)
        paths[label] = directory / f"{label}.pem"
        paths[label].write_bytes(cert.public_bytes(PEM))
    caKey, caCert = authorities["ca"]
    servers = {
        "good": [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        "wrong": [x509.DNSName("chat.example.org")],
    }  # fmt: skip
    for label, names in servers.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(names[0].value, "chatd test ca", key, caKey, names)
        paths[label + "-key"] = directory / f"{label}-key.pem"
        paths[label + "-key"].write_bytes(
            key.private_bytes(
                PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        paths[label + "-cert"] = directory / f"{label}-cert.pem"
        paths[label + "-cert"].write_bytes(cert.public_bytes(PEM))
    return paths


class TLSTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        self.certs = makeCertificates(directory)
        listen = []
        for label in ("good", "wrong"):
            listen += [
                "--listen",
                "ssl:0:interface=127.0.0.1:"
                f"privateKey={self.certs[label + '-key']}:"
                f"certKey={self.certs[label + '-cert']}",
            ]
        self.daemon = Daemon("--stats-interval", "0", *listen)
        self.addCleanup(self.daemon.stop)
        yield self.daemon.start()
        self.tlsPort, self.wrongPort = self.daemon.ports()[1:]

    @defer.inlineCallbacks
    def test_tls_and_plain_users_chat(self):
        """Users on the TLS and the plain listener are in one chat."""
        plain = spawn(self, "--name", "plain", f"127.0.0.1:{self.daemon.port}")
        yield plain.waitFor("* you joined as plain")
        ca = str(self.certs["ca"])
        secure = spawn(
            self, "--name", "secure", "--tls", "--ca", ca, f"localhost:{self.tlsPort}"
        )
        yield secure.waitFor("* you joined as secure")
        byIP = spawn(
            self, "--name", "byip", "--tls", "--ca", ca, f"127.0.0.1:{self.tlsPort}"
        )
        yield byIP.waitFor("* you joined as byip")
        plain.type(b"hello tls\n")
        yield secure.waitFor("plain: hello tls\n")
        yield byIP.waitFor("plain: hello tls\n")
        secure.type(b"hello plain\n")
        yield plain.waitFor("secure: hello plain\n")
        for client in (plain, secure, byIP):
            client.closeStdin()
            self.assertEqual((yield client.ended), 0, client.errors)
        yield daemonLogs(self.daemon, "name=secure reason=quit")

    @defer.inlineCallbacks
    def test_refusals(self):
        """Wrong host, untrusted CA, TLS to plain and plain to TLS: one line, exit 1."""
        ca, other = str(self.certs["ca"]), str(self.certs["other-ca"])
        cases = [
            (("--tls", "--ca", ca, f"localhost:{self.wrongPort}"), b"not valid for that host name"),
            (("--tls", "--ca", other, f"localhost:{self.tlsPort}"), b"is not trusted"),
            (("--tls", f"localhost:{self.tlsPort}"), b"is not trusted"),
            (("--tls", "--ca", ca, f"localhost:{self.daemon.port}"), b"is it a TLS port?"),
            ((f"localhost:{self.tlsPort}",), b"try --tls"),
        ]  # fmt: skip
        clients = [(spawn(self, "--name", "eve", *args), want) for args, want in cases]
        for client, want in clients:
            self.assertEqual((yield client.ended), 1, client.errors)
            self.assertEqual(client.errors.count(b"\n"), 1, client.errors)
            self.assertIn(want, client.errors)
            self.assertNotIn(b"Traceback", client.errors)
        self.assertNotIn("name=eve", self.daemon.log)
