"""Bearer tokens (AUTH_TOKENS) and transport security (TLS, mutual TLS), with real handshakes on
certificates this test makes itself: a CA, a server certificate for 127.0.0.1, a client one.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from blog.v1 import user_service_pb2, user_service_pb2_grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import ServerProcess, health_status, rich_error

TOKEN = "s3cr3t-token-for-tests"
OTHER = "another-accepted-token"
SERVING = health_pb2.HealthCheckResponse.SERVING


# --- bearer tokens ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server(database_url: str) -> Iterator[ServerProcess]:
    with ServerProcess({"DATABASE_URL": database_url, "AUTH_TOKENS": f"{TOKEN}, {OTHER}"}) as p:
        yield p


def get_user(channel: grpc.Channel, metadata: Any = None) -> grpc.StatusCode:
    stub = user_service_pb2_grpc.UserServiceStub(channel)
    try:
        stub.GetUser(user_service_pb2.GetUserRequest(id=2**62), metadata=metadata, timeout=5)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [("authorization", "Bearer wrong")],
        [("authorization", f"Bearer {TOKEN}x")],
        [("authorization", f"Bearer {TOKEN[:-1]}")],
        [("authorization", TOKEN)],
        [("authorization", f"Basic {TOKEN}")],
        [("authorization", "Bearer ")],
        [("x-api-key", TOKEN)],
    ],
    ids=["none", "wrong", "longer", "prefix", "no-scheme", "basic", "empty", "other-header"],
)
def test_api_without_a_valid_token_is_unauthenticated(
    auth_server: ServerProcess, metadata: Any
) -> None:
    with grpc.insecure_channel(auth_server.address) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListUsers(user_service_pb2.ListUsersRequest(), metadata=metadata, timeout=5)
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.domain == "blog.v1"
    assert error.reason
    assert TOKEN not in error.message


@pytest.mark.parametrize("token", [TOKEN, OTHER])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_api_with_a_valid_bearer_token_is_served(
    auth_server: ServerProcess, token: str, scheme: str
) -> None:
    with grpc.insecure_channel(auth_server.address) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        response = stub.ListUsers(
            user_service_pb2.ListUsersRequest(),
            metadata=(("authorization", f"{scheme} {token}"),),
            timeout=5,
        )
    assert response is not None
    # NOT_FOUND, not UNAUTHENTICATED: the call got through to the service.
    with grpc.insecure_channel(auth_server.address) as channel:
        code = get_user(channel, [("authorization", f"Bearer {token}")])
    assert code == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection_stay_open_without_a_token(auth_server: ServerProcess) -> None:
    assert health_status(auth_server.address) == SERVING
    with grpc.insecure_channel(auth_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "blog.v1.UserService", "blog.v1.PostService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"blog.v1.UserService", "blog.v1.PostService", "grpc.health.v1.Health"} <= names


def test_token_never_appears_in_the_log(auth_server: ServerProcess) -> None:
    with grpc.insecure_channel(auth_server.address) as channel:
        get_user(channel, [("authorization", f"Bearer {TOKEN}")])
        get_user(channel, [("authorization", f"Bearer {TOKEN}-wrong")])
    time.sleep(0.2)
    assert TOKEN not in auth_server.output()


# --- TLS ---------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: bytes
    server_cert: Path
    server_key: Path
    ca_file: Path
    client_cert: bytes
    client_key: bytes
    stranger_cert: bytes  # a client certificate from a CA the server does not trust
    stranger_key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], name: str, *, server: bool
) -> tuple[bytes, bytes]:
    ca_cert, ca_key = ca
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = _ca("blog test CA")
    stranger_ca = _ca("someone else's CA")
    server_cert, server_key = _leaf(ca, "127.0.0.1", server=True)
    client_cert, client_key = _leaf(ca, "client", server=False)
    stranger_cert, stranger_key = _leaf(stranger_ca, "stranger", server=False)
    ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
    (root / "ca.pem").write_bytes(ca_pem)
    (root / "server.pem").write_bytes(server_cert)
    (root / "server.key").write_bytes(server_key)
    return Pki(
        ca=ca_pem,
        server_cert=root / "server.pem",
        server_key=root / "server.key",
        ca_file=root / "ca.pem",
        client_cert=client_cert,
        client_key=client_key,
        stranger_cert=stranger_cert,
        stranger_key=stranger_key,
    )


def _start_tls(env: dict[str, str], credentials: grpc.ChannelCredentials) -> ServerProcess:
    process = ServerProcess(env).start(wait_serving=False)
    end = time.monotonic() + 20
    while health_status(process.address, credentials=credentials) != SERVING:
        assert process.process is not None
        if process.process.poll() is not None or time.monotonic() > end:
            process.stop()
            raise AssertionError(f"TLS server never became SERVING:\n{process.output()}")
        time.sleep(0.05)
    return process


def _users_call(channel: grpc.Channel) -> grpc.StatusCode:
    stub = user_service_pb2_grpc.UserServiceStub(channel)
    try:
        stub.ListUsers(user_service_pb2.ListUsersRequest(), timeout=3)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(
    database_url: str, pki: Pki
) -> None:
    trusted = grpc.ssl_channel_credentials(root_certificates=pki.ca)
    env = {
        "DATABASE_URL": database_url,
        "TLS_CERT_FILE": str(pki.server_cert),
        "TLS_KEY_FILE": str(pki.server_key),
    }
    process = _start_tls(env, trusted)
    try:
        for target in (process.address, f"localhost:{process.port}"):
            with grpc.secure_channel(target, trusted) as channel:
                assert _users_call(channel) == grpc.StatusCode.OK
        with grpc.insecure_channel(process.address) as channel:
            assert _users_call(channel) == grpc.StatusCode.UNAVAILABLE
        # A client that does not trust our CA refuses the server.
        untrusted = grpc.ssl_channel_credentials(root_certificates=pki.stranger_cert)
        with grpc.secure_channel(process.address, untrusted) as channel:
            assert _users_call(channel) == grpc.StatusCode.UNAVAILABLE
    finally:
        assert process.stop() == 0


def test_mutual_tls_requires_a_client_certificate_from_the_ca(database_url: str, pki: Pki) -> None:
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=pki.ca, private_key=pki.client_key, certificate_chain=pki.client_cert
    )
    env = {
        "DATABASE_URL": database_url,
        "TLS_CERT_FILE": str(pki.server_cert),
        "TLS_KEY_FILE": str(pki.server_key),
        "TLS_CLIENT_CA_FILE": str(pki.ca_file),
    }
    process = _start_tls(env, with_cert)
    try:
        with grpc.secure_channel(process.address, with_cert) as channel:
            assert _users_call(channel) == grpc.StatusCode.OK
        without_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca)
        with grpc.secure_channel(process.address, without_cert) as channel:
            assert _users_call(channel) == grpc.StatusCode.UNAVAILABLE
        stranger = grpc.ssl_channel_credentials(
            root_certificates=pki.ca,
            private_key=pki.stranger_key,
            certificate_chain=pki.stranger_cert,
        )
        with grpc.secure_channel(process.address, stranger) as channel:
            assert _users_call(channel) == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(process.address) as channel:
            assert _users_call(channel) == grpc.StatusCode.UNAVAILABLE
    finally:
        assert process.stop() == 0
