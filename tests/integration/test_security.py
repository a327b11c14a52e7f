"""TLS, mutual TLS and bearer tokens, with throwaway certificates made at test time."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from _running import make_client, running, sample, scrape, settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import actgrad
from actgrad_server.app import ActgradServer

KINDS = ["sync", "async"]


@dataclass(frozen=True)
class _Pem:
    cert: bytes
    key: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca(common_name: str) -> tuple[_Pem, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
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
    return _Pem(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)), cert, key


def _leaf(
    common_name: str,
    issuer: tuple[_Pem, x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    server: bool,
) -> _Pem:
    _, issuer_cert, issuer_key = issuer
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_cert.subject)
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
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    return _Pem(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


@dataclass(frozen=True)
class _Pki:
    ca: _Pem
    server: _Pem
    client: _Pem
    other_ca: _Pem
    other_client: _Pem  # signed by other_ca
    files: dict[str, str]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> _Pki:
    ca = _ca("actgrad test CA")
    other = _ca("some other CA")
    made = _Pki(
        ca=ca[0],
        server=_leaf("localhost", ca, server=True),
        client=_leaf("actgrad test client", ca, server=False),
        other_ca=other[0],
        other_client=_leaf("intruder", other, server=False),
        files={},
    )
    folder: Path = tmp_path_factory.mktemp("pki")
    for name, data in (
        ("ca.pem", made.ca.cert),
        ("server.pem", made.server.cert),
        ("server.key", made.server.key),
    ):
        (folder / name).write_bytes(data)
        made.files[name] = str(folder / name)
    return made


@pytest.fixture(scope="module")
def tls_server(pki: _Pki) -> Iterator[ActgradServer]:
    config = settings(tls_cert=pki.files["server.pem"], tls_key=pki.files["server.key"])
    with running(config) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(pki: _Pki) -> Iterator[ActgradServer]:
    config = settings(
        tls_cert=pki.files["server.pem"],
        tls_key=pki.files["server.key"],
        tls_client_ca=pki.files["ca.pem"],
    )
    with running(config) as server:
        yield server


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActgradServer]:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text("first-token\n\n  second-token  \n")
    with running(settings(auth_token_file=str(path), metrics_port=0)) as server:
        yield server


def _call(kind: str, server: ActgradServer, **options: Any) -> np.ndarray:
    client = make_client(kind, f"127.0.0.1:{server.port}", timeout=10.0, **options)
    try:
        result: np.ndarray = client.activate(np.array([-1.0, 2.0]), "relu")
        return result
    finally:
        client.close()


def _assert_fails(kind: str, server: ActgradServer, code: grpc.StatusCode, **options: Any) -> None:
    with pytest.raises(actgrad.ActgradError) as info:
        _call(kind, server, max_attempts=1, **options)
    assert info.value.code == code


# -- TLS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_tls_with_the_right_ca_succeeds(kind: str, pki: _Pki, tls_server: ActgradServer) -> None:
    y = _call(kind, tls_server, root_certificates=pki.ca.cert)
    assert y.tolist() == [0.0, 2.0]


@pytest.mark.parametrize("kind", KINDS)
def test_plaintext_client_fails_against_tls(kind: str, tls_server: ActgradServer) -> None:
    _assert_fails(kind, tls_server, grpc.StatusCode.UNAVAILABLE)


@pytest.mark.parametrize("kind", KINDS)
def test_tls_client_rejects_a_server_signed_by_another_ca(
    kind: str, pki: _Pki, tls_server: ActgradServer
) -> None:
    _assert_fails(
        kind, tls_server, grpc.StatusCode.UNAVAILABLE, root_certificates=pki.other_ca.cert
    )


# -- mutual TLS --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_mtls_with_a_client_certificate_of_the_ca_succeeds(
    kind: str, pki: _Pki, mtls_server: ActgradServer
) -> None:
    y = _call(
        kind,
        mtls_server,
        root_certificates=pki.ca.cert,
        certificate_chain=pki.client.cert,
        private_key=pki.client.key,
    )
    assert y.tolist() == [0.0, 2.0]


@pytest.mark.parametrize("kind", KINDS)
def test_mtls_without_a_client_certificate_fails(
    kind: str, pki: _Pki, mtls_server: ActgradServer
) -> None:
    _assert_fails(kind, mtls_server, grpc.StatusCode.UNAVAILABLE, root_certificates=pki.ca.cert)


@pytest.mark.parametrize("kind", KINDS)
def test_mtls_with_a_certificate_from_another_ca_fails(
    kind: str, pki: _Pki, mtls_server: ActgradServer
) -> None:
    _assert_fails(
        kind,
        mtls_server,
        grpc.StatusCode.UNAVAILABLE,
        root_certificates=pki.ca.cert,
        certificate_chain=pki.other_client.cert,
        private_key=pki.other_client.key,
    )


# -- bearer tokens -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("token", ["first-token", "second-token"])
def test_an_accepted_token_succeeds(kind: str, token: str, token_server: ActgradServer) -> None:
    assert _call(kind, token_server, token=token).tolist() == [0.0, 2.0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("token", [None, "wrong-token", "first-token-", "first-toke"])
def test_a_missing_or_wrong_token_is_unauthenticated(
    kind: str, token: str | None, token_server: ActgradServer
) -> None:
    options = {} if token is None else {"token": token}
    with pytest.raises(actgrad.UnauthenticatedError) as info:
        _call(kind, token_server, **options)  # retries on: UNAUTHENTICATED is not retried
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_unauthenticated_calls_are_not_retried_and_not_computed(
    token_server: ActgradServer,
) -> None:
    port = token_server.metrics_port or 0
    rpc = "actgrad.v1.ActivationService/Activate"
    before = sample(scrape(port), "actgrad_requests_received_total", rpc=rpc) or 0.0
    with pytest.raises(actgrad.UnauthenticatedError):
        _call("sync", token_server, token="wrong-token", max_attempts=5)
    text = scrape(port)
    assert sample(text, "actgrad_requests_received_total", rpc=rpc) == before + 1
    # Refused before the servicer: no function or dtype was read.
    assert sample(text, "actgrad_requests_total", rpc=rpc, code="UNAUTHENTICATED") is not None


def test_a_token_in_another_scheme_is_refused(token_server: ActgradServer) -> None:
    from actgrad.v1 import activation_pb2, activation_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{token_server.port}") as channel:
        stub = activation_pb2_grpc.ActivationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ListFunctions(
                activation_pb2.ListFunctionsRequest(),
                metadata=[("authorization", "Basic first-token")],
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("kind", KINDS)
def test_health_stays_open_without_a_token(kind: str, token_server: ActgradServer) -> None:
    client = make_client(kind, f"127.0.0.1:{token_server.port}", timeout=10.0)
    try:
        assert client.health() == "SERVING"
        with pytest.raises(actgrad.UnauthenticatedError):
            client.functions()
    finally:
        client.close()


def test_tls_tokens_and_mtls_together(pki: _Pki, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("t0ken\n")
    config = settings(
        tls_cert=pki.files["server.pem"],
        tls_key=pki.files["server.key"],
        tls_client_ca=pki.files["ca.pem"],
        auth_token_file=str(tokens),
    )
    with running(config) as server:
        secure = {
            "root_certificates": pki.ca.cert,
            "certificate_chain": pki.client.cert,
            "private_key": pki.client.key,
        }
        assert _call("sync", server, token="t0ken", **secure).tolist() == [0.0, 2.0]
        _assert_fails("sync", server, grpc.StatusCode.UNAUTHENTICATED, **secure)


def test_a_rotated_certificate_is_used_by_new_connections_without_a_restart(
    tmp_path: Path,
) -> None:
    first_ca, second_ca = _ca("first CA"), _ca("second CA")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"

    def install(issuer: tuple[_Pem, x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
        # As a Secret update lands: new files renamed into place.
        leaf = _leaf("localhost", issuer, server=True)
        for path, data in ((cert, leaf.cert), (key, leaf.key)):
            fresh = path.with_suffix(".new")
            fresh.write_bytes(data)
            os.replace(fresh, path)

    install(first_ca)
    with running(settings(tls_cert=str(cert), tls_key=str(key))) as server:
        target = f"127.0.0.1:{server.port}"
        with actgrad.Client(target, root_certificates=first_ca[0].cert, timeout=10.0) as old:
            assert old.activate([1.0], "relu").tolist() == [1.0]
            install(second_ca)
            # A new connection gets the new certificate: trusted by the second CA only.
            with actgrad.Client(target, root_certificates=second_ca[0].cert, timeout=10.0) as new:
                assert new.activate([2.0], "relu").tolist() == [2.0]
            with (
                actgrad.Client(
                    target, root_certificates=first_ca[0].cert, timeout=5.0, max_attempts=1
                ) as stale,
                pytest.raises(actgrad.UnavailableError),
            ):
                stale.activate([3.0], "relu")
            # The connection made before the rotation goes on with the old one.
            assert old.activate([4.0], "relu").tolist() == [4.0]


# -- HTTP (--http-port) with the same files -------------------------------------------


def _https_context(pki: _Pki, tmp_path: Path, *, client: _Pem | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=pki.ca.cert.decode())
    if client is not None:
        (tmp_path / "client.pem").write_bytes(client.cert)
        (tmp_path / "client.key").write_bytes(client.key)
        context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    return context


def test_https_with_the_server_certificate(
    pki: _Pki, tls_server: ActgradServer, tmp_path: Path
) -> None:
    url = f"https://localhost:{tls_server.http_port}/v2/health/ready"
    with httpx.Client(verify=_https_context(pki, tmp_path), timeout=10.0) as http:
        assert http.get(url).status_code == 200
    with pytest.raises(httpx.HTTPError), httpx.Client(timeout=10.0) as plain:
        plain.get(url.replace("https://", "http://"))


def test_https_with_mutual_tls_needs_a_client_certificate(
    pki: _Pki, mtls_server: ActgradServer, tmp_path: Path
) -> None:
    url = f"https://localhost:{mtls_server.http_port}/v2/health/ready"
    context = _https_context(pki, tmp_path, client=pki.client)
    with httpx.Client(verify=context, timeout=10.0) as http:
        assert http.get(url).status_code == 200
    with (
        pytest.raises(httpx.HTTPError),
        httpx.Client(verify=_https_context(pki, tmp_path), timeout=10.0) as anonymous,
    ):
        anonymous.get(url)


def test_https_takes_a_rotated_certificate_without_a_restart(pki: _Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(pki.server.cert)
    key.write_bytes(pki.server.key)
    with running(settings(tls_cert=str(cert), tls_key=str(key))) as server:
        url = f"https://127.0.0.1:{server.http_port}/v2/health/live"
        with httpx.Client(verify=_https_context(pki, tmp_path), timeout=10.0) as http:
            assert http.get(url).status_code == 200
        new_ca = _ca("the rotated CA")
        new_leaf = _leaf("localhost", new_ca, server=True)
        # A pair that does not match is refused; the current one keeps serving.
        cert.write_bytes(new_leaf.cert)
        time.sleep(2.5)
        with httpx.Client(verify=_https_context(pki, tmp_path), timeout=10.0) as http:
            assert http.get(url).status_code == 200
        key.write_bytes(new_leaf.key)
        context = ssl.create_default_context(cadata=new_ca[0].cert.decode())
        deadline = time.monotonic() + 10.0
        while True:
            try:
                with httpx.Client(verify=context, timeout=10.0) as http:
                    assert http.get(url).status_code == 200
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the new certificate was never served"
                time.sleep(0.2)
