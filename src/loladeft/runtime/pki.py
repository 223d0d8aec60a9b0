"""The local federation's keys and certificates (TLS, SuperNode authentication).

Flower 1.42 facts this module relies on (read from the installed source):

* TLS: the SuperLink takes ``--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile``, a SuperNode
  ``--root-certificates CA`` (and the same three for its own Runtime API).
* SuperNode authentication: ``flower-superlink --enable-supernode-auth`` refuses
  self-registration; each node's public key (EC on a NIST curve, OpenSSH format) is
  registered beforehand with ``flwr supernode register KEY.pub CONNECTION`` and the node is
  started with ``--auth-supernode-private-key KEY`` (OpenSSH private key). Node
  authentication requires TLS.

Everything is generated with :mod:`cryptography` (a Flower dependency).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path


def make_certificates(folder: Path) -> dict[str, Path]:
    """Generate a CA and a server certificate for ``127.0.0.1``/``localhost``.

    Parameters
    ----------
    folder
        Where to write ``ca.crt``, ``server.pem`` and ``server.key`` (created if
        needed).

    Returns
    -------
    dict[str, Path]
        ``{"ca": ..., "cert": ..., "key": ...}``; the server certificate is signed by the
        CA and has SANs ``localhost``, ``127.0.0.1`` and ``::1``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    validity = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=7))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loladeft local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    paths = {
        "ca": folder / "ca.crt",
        "cert": folder / "server.pem",
        "key": folder / "server.key",
    }
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["key"].chmod(0o600)
    return paths


def make_node_keys(folder: Path, n: int, prefix: str = "node") -> list[tuple[Path, Path]]:
    """Generate ``n`` SuperNode authentication key pairs in the format flwr 1.42 reads.

    Parameters
    ----------
    folder
        Where to write ``{prefix}-{i}`` (private) and ``{prefix}-{i}.pub`` (public).
    n
        Number of key pairs.
    prefix
        File name prefix.

    Returns
    -------
    list[tuple[Path, Path]]
        ``(private_key, public_key)`` per node: an EC P-384 key, the private one in
        OpenSSH format (``flower-supernode --auth-supernode-private-key``), the public
        one as an OpenSSH line (``flwr supernode register``).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP384R1())
        private, public = folder / f"{prefix}-{i}", folder / f"{prefix}-{i}.pub"
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        private.chmod(0o600)
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            + b"\n"
        )
        pairs.append((private, public))
    return pairs
