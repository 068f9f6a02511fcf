"""The mesh's certificates: a local CA, one certificate per identity, and the gRPC and NATS
credentials built from them.

`openautoglm up` creates the files on first start; `openautoglm certs create DIR` writes the same
set for docker compose and Kubernetes Secrets; cert-manager is the production path (README).
An identity is a service name, `nats` (the NATS server) or `operator` (whoever runs the stack:
the `up` process, the CLI's direct calls to internal services, the tests). It is the
certificate's common name and first DNS name, and it is what peers check:
- a client names the service it expects to reach (`grpc.ssl_target_name_override`, NATS'
  `tls_hostname`), so a trainer's certificate cannot pass for the evaluator;
- an internal server lets only the identities in `ALLOWED_CALLERS` call its methods;
- the NATS server maps the client certificate to the user of that name (`verify_and_map`),
  whose subject permissions `nats_auth.py` sets.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from openautoglm.common.config import SERVICES, ConfigError, ServiceSettings

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
NATS_IDENTITY = "nats"
PUBLIC_IDENTITY = "gateway"  # the one identity clients outside the mesh reach, by its address
OPERATOR_IDENTITY = "operator"
IDENTITIES = (*SERVICES, NATS_IDENTITY, OPERATOR_IDENTITY)
# Names every certificate is valid for besides its identity: the embedded stack runs on loopback.
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")
CA_DAYS = 3650
CERT_DAYS = 825  # the longest validity clients commonly accept for a leaf certificate
ORGANISATION = "Open-AutoGLM mesh"

# Who may call each internal service's own methods (health and reflection answer any mesh
# certificate). The gateway is the only controller; trainers call only the evaluator.
# The defaults per process, then the exceptions per gRPC service.
ALLOWED_CALLERS: dict[str, frozenset[str]] = {
    "prompt-generator": frozenset({"gateway", OPERATOR_IDENTITY}),
    "gnn-scheduler": frozenset({"gateway", OPERATOR_IDENTITY}),
    "trainer": frozenset({"gateway", OPERATOR_IDENTITY}),
    "evaluator": frozenset({"trainer", "gateway", OPERATOR_IDENTITY}),
}
# gRPC services whose callers differ from their process's: the prompt model a trainer hosts
# answers the prompt-generator (and the operator), and only them.
ALLOWED_CALLERS_BY_GRPC_SERVICE: dict[str, frozenset[str]] = {
    "openautoglm.v1.PromptModel": frozenset({"prompt-generator", OPERATOR_IDENTITY}),
}


class MissingCertificates(RuntimeError):
    """A TLS directory lacks a file an identity needs."""


def cert_path(directory: Path, identity: str) -> Path:
    return directory / f"{identity}.crt"


def key_path(directory: Path, identity: str) -> Path:
    return directory / f"{identity}.key"


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a private key readable by its owner only (created 0600, never world-readable first)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ensure_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if (directory / CA_CERT).exists() and (directory / CA_KEY).exists():
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key
    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    name = _name(f"{ORGANISATION} CA")
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / CA_KEY, _pem_key(key))
    (directory / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _issue(directory: Path, identity: str, hosts: tuple[str, ...], ca_cert: x509.Certificate,
           ca_key: ec.EllipticCurvePrivateKey) -> None:
    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    dns = [identity, *LOOPBACK_NAMES]
    addresses: list[x509.GeneralName] = []
    for host in hosts:
        try:
            addresses.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if host not in dns:
                dns.append(host)
    for address in LOOPBACK_ADDRESSES:
        addresses.append(x509.IPAddress(ipaddress.ip_address(address)))
    cert = (
        x509.CertificateBuilder().subject_name(_name(identity)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([*map(x509.DNSName, dns), *addresses]), critical=False)
        # Every identity is both: a service serves its port and calls its peers.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path(directory, identity), _pem_key(key))
    cert_path(directory, identity).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def create_mesh_certificates(directory: Path, hosts: tuple[str, ...] = (),
                             identities: tuple[str, ...] = IDENTITIES) -> list[str]:
    """Create the CA and a certificate per identity in `directory`, keeping whatever already
    exists (a restarted stack keeps its certificates). `hosts`: extra DNS names or addresses the
    gateway's certificate must be valid for (its public name; peers inside the mesh check
    identities, not addresses). Returns the identities issued."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_cert, ca_key = _ensure_ca(directory)
    issued = []
    for identity in identities:
        if not (cert_path(directory, identity).exists() and key_path(directory, identity).exists()):
            _issue(directory, identity, hosts if identity == PUBLIC_IDENTITY else (), ca_cert, ca_key)
            issued.append(identity)
    return issued


def export_identity(directory: Path, identity: str, target: Path, container_readable: bool = False) -> None:
    """Copy one identity's certificate, key and the CA certificate (never the CA's key) into
    `target` (made 0700), so a container can mount its own credentials and nothing else.

    `container_readable`: the key is 0644 inside the 0700 folder. docker compose mounts a file
    secret as it is on the host (it cannot change owner or mode), so a container user other than
    the host's owner (the image runs as uid 10001) could not read a 0600 key; the folder still
    keeps other users of the host out."""
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o700)
    (target / CA_CERT).write_bytes((directory / CA_CERT).read_bytes())
    cert_path(target, identity).write_bytes(cert_path(directory, identity).read_bytes())
    key = key_path(target, identity)
    key.unlink(missing_ok=True)
    _write_private(key, key_path(directory, identity).read_bytes(), 0o644 if container_readable else 0o600)


@dataclass(frozen=True)
class MeshIdentity:
    """One identity's certificate, key and the mesh's CA, as gRPC and NATS credentials."""

    directory: Path
    name: str

    def check(self) -> "MeshIdentity":
        """Raise MissingCertificates naming every file this identity lacks."""
        missing = [p for p in (self.directory / CA_CERT, cert_path(self.directory, self.name),
                               key_path(self.directory, self.name)) if not p.is_file()]
        if missing:
            raise MissingCertificates(
                f"{self.name}: missing TLS file(s) {', '.join(map(str, missing))}; create them with "
                f"`openautoglm certs create {self.directory}` (or mount them from a Secret)")
        return self

    @cached_property
    def _files(self) -> tuple[bytes, bytes, bytes]:
        self.check()
        return ((self.directory / CA_CERT).read_bytes(), cert_path(self.directory, self.name).read_bytes(),
                key_path(self.directory, self.name).read_bytes())

    def server_credentials(self) -> grpc.ServerCredentials:
        """An internal service's port: TLS that requires a client certificate from the mesh CA."""
        ca, cert, key = self._files
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """This identity calling a peer: trusts only the mesh CA, presents its own certificate."""
        ca, cert, key = self._files
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def ssl_context(self, server_name: str = NATS_IDENTITY) -> ssl.SSLContext:
        """A client TLS context for NATS: the mesh CA only, this identity's certificate."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.directory / CA_CERT))
        context.load_cert_chain(str(cert_path(self.directory, self.name)), str(key_path(self.directory, self.name)))
        return context


def public_server_credentials(cert_file: Path, key_file: Path) -> grpc.ServerCredentials:
    """The gateway's public port: TLS with no client certificate (callers show an API key)."""
    return grpc.ssl_server_credentials([(key_file.read_bytes(), cert_file.read_bytes())])


def public_certificate(settings: ServiceSettings, identity: MeshIdentity) -> tuple[Path, Path]:
    """The gateway's public ports' (certificate, key): the public ones when configured, else its
    mesh certificate. Its gRPC port and its HTTP port show the same one."""
    if settings.public_tls_cert and settings.public_tls_key:
        return settings.public_tls_cert, settings.public_tls_key
    return identity.directory / f"{identity.name}.crt", identity.directory / f"{identity.name}.key"


def public_http_ssl_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """The gateway's HTTP port: TLS with `public_certificate`; None with --plaintext or
    --http-plaintext."""
    identity = service_identity(settings)
    if identity is None or settings.http_plaintext:
        return None
    cert, key = public_certificate(settings, identity)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The mesh identity (certificate common name) of the caller, if it showed a certificate."""
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode() if names else None


def is_loopback(host: str) -> bool:
    """Whether `host` (an address to bind) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_identity(settings: ServiceSettings) -> MeshIdentity | None:
    """A service's own certificates, or None when it runs with --plaintext."""
    return None if settings.plaintext else MeshIdentity(settings.tls_directory(), settings.service).check()


def check_transport(settings: ServiceSettings) -> None:
    """Plaintext only on loopback and only when asked for; otherwise the certificates exist.
    Raises ConfigError naming the setting."""
    if settings.http_plaintext and not is_loopback(settings.host):
        raise ConfigError(f"{settings.service}: --http-plaintext (OPENAUTOGLM_HTTP_PLAINTEXT) is allowed only on a "
                          f"loopback address, not on {settings.host}")
    if settings.plaintext:
        if not is_loopback(settings.host):
            raise ConfigError(f"{settings.service}: --plaintext (OPENAUTOGLM_PLAINTEXT) is allowed only on a "
                              f"loopback address, not on {settings.host}")
        return
    try:
        service_identity(settings)
    except MissingCertificates as err:
        raise ConfigError(f"{err} -- or pass --plaintext to serve on loopback without TLS") from None
    if (settings.public_tls_cert is None) != (settings.public_tls_key is None):
        raise ConfigError(f"{settings.service}: set both OPENAUTOGLM_PUBLIC_TLS_CERT and OPENAUTOGLM_PUBLIC_TLS_KEY, "
                          "or neither")
