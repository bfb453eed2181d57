"""The test cluster's certificates, keys and kubeconfigs (what ``kubeadm init phase
certs`` and ``kubeconfig`` make for a one-node cluster).

Two CAs: the cluster CA signs the apiserver's and the kubelet's serving certificates
and every client certificate (admin, controller-manager, scheduler, kube-proxy, the
kubelet's node identity, the apiserver's client to the kubelets); the front-proxy CA
signs the aggregation layer's client (metrics-server and KEDA's metrics apiserver trust
requests it forwards). Plus the service-account signing key. ECDSA P-256 keys, valid
for a year: the cluster is thrown away long before.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ClientIdentity", "Pki", "write_kubeconfig"]

_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's file stem, user name (CN) and groups (O)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


#: The clients of the apiserver (and the apiserver's own client to the kubelets).
CLIENTS = (
    ClientIdentity("admin", "kubernetes-admin", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    ClientIdentity("kube-proxy", "system:kube-proxy"),
    # kube-router's network policy controller (its ClusterRole: .netpol).
    ClientIdentity("kube-router", "tasklab:kube-router"),
    # The apiserver's client to the kubelets (logs, exec, port-forward, metrics).
    ClientIdentity(
        "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)
    ),
)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    return x509.Name(attrs)


class Pki:
    """The certificates of one cluster, in ``directory`` (made once, then reused)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, stem: str, suffix: str = "crt") -> Path:
        return self.dir / f"{stem}.{suffix}"

    @property
    def ca(self) -> Path:
        return self.path("ca")

    def create(self, node_name: str, sans_ip: list[str], sans_dns: list[str]) -> None:
        """Make every key and certificate (nothing is kept from an earlier run)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        ca_key, ca_cert = self._ca("ca", "kubernetes")
        front_key, front_cert = self._ca("front-proxy-ca", "front-proxy-ca")
        ips = [ipaddress.ip_address(ip) for ip in sans_ip]
        self._leaf(
            "apiserver",
            _name("kube-apiserver"),
            ca_key,
            ca_cert,
            server=True,
            dns=[
                *sans_dns,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ips=ips,
        )
        self._leaf(
            "kubelet", _name(node_name), ca_key, ca_cert, server=True, dns=[node_name], ips=ips
        )
        for client in CLIENTS:
            self._leaf(client.stem, _name(client.user, client.groups), ca_key, ca_cert)
        self._leaf("node", _name(f"system:node:{node_name}", ("system:nodes",)), ca_key, ca_cert)
        self._leaf("front-proxy-client", _name("front-proxy-client"), front_key, front_cert)
        sa = _key()
        _write_key(self.path("sa", "key"), sa)
        self.path("sa", "pub").write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _ca(self, stem: str, common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(_name(common))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        _write_key(self.path(stem, "key"), key)
        _write_cert(self.path(stem), cert)
        return key, cert

    def _leaf(
        self,
        stem: str,
        subject: x509.Name,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        *,
        server: bool = False,
        dns: list[str] | None = None,
        ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = None,
    ) -> None:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or []]
            names += [x509.IPAddress(ip) for ip in ips or []]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        _write_key(self.path(stem, "key"), key)
        _write_cert(self.path(stem), builder.sign(ca_key, hashes.SHA256()))


def write_kubeconfig(
    path: Path, *, name: str, server: str, pki: Pki, client: str, user: str
) -> None:
    """A kubeconfig with one cluster, user and context (``name``), files referenced."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority": str(pki.ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki.path(client)),
                    "client-key": str(pki.path(client, "key")),
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
