"""Connecting to a secured Temporal: API-key and mTLS profiles, environment variables, mistakes.

Everything goes through ``orders.client.temporal.connect_config``, the one place the worker, the
starter and the tools read ``temporalio.envconfig`` from. Each test starts from an environment
with no ``TEMPORAL_*`` variable and no user config file.
"""

import asyncio
import contextlib
import datetime
import io
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.client import Client
from temporalio.service import TLSConfig

import starter
from orders.client.temporal import TemporalConnectionError, connect, connect_config
from orders.config.settings import DEFAULT_TEMPORAL_ADDRESS


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-user-config"))


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    """A throwaway self-signed certificate, its key, and itself as the server CA, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orders-worker")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    files = {
        "client_cert": certificate.public_bytes(serialization.Encoding.PEM),
        "client_key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "server_ca_cert": certificate.public_bytes(serialization.Encoding.PEM),
    }
    paths = {}
    for kind, data in files.items():
        paths[kind] = tmp_path / f"{kind}.pem"
        paths[kind].write_bytes(data)
    return paths


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "temporal.toml"
    path.write_text(text)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(path))
    return path


CLOUD_PROFILE = """
[profile.cloud]
address = "us-east-1.aws.api.temporal.io:7233"
namespace = "orders.a1b2c"
api_key = "key-from-the-cloud-ui"
"""


def test_nothing_configured_means_the_local_dev_server() -> None:
    assert connect_config() == {"target_host": DEFAULT_TEMPORAL_ADDRESS}


def test_an_api_key_profile_from_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, monkeypatch, CLOUD_PROFILE)
    expected = {
        "target_host": "us-east-1.aws.api.temporal.io:7233",
        "namespace": "orders.a1b2c",
        "api_key": "key-from-the-cloud-ui",
        "tls": True,  # an API key turns TLS on with the system's root certificates
    }
    assert connect_config("cloud") == expected  # --profile cloud
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    assert connect_config() == expected


def test_an_mtls_profile_reads_the_certificate_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certificates: dict[str, Path]
) -> None:
    write_config(
        tmp_path,
        monkeypatch,
        f"""
[profile.production]
address = "temporal.internal.example:7233"
namespace = "orders"

[profile.production.tls]
client_cert_path = "{certificates["client_cert"]}"
client_key_path = "{certificates["client_key"]}"
server_ca_cert_path = "{certificates["server_ca_cert"]}"
server_name = "temporal.internal.example"
""",
    )
    config = connect_config("production")
    assert (config["target_host"], config["namespace"]) == (
        "temporal.internal.example:7233",
        "orders",
    )
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == certificates["client_cert"].read_bytes()
    assert tls.client_private_key == certificates["client_key"].read_bytes()
    assert tls.server_root_ca_cert == certificates["server_ca_cert"].read_bytes()
    assert tls.domain == "temporal.internal.example"
    assert "api_key" not in config


def test_environment_variables_alone(
    monkeypatch: pytest.MonkeyPatch, certificates: dict[str, Path]
) -> None:
    variables = {
        "TEMPORAL_ADDRESS": "temporal.internal.example:7233",
        "TEMPORAL_NAMESPACE": "orders",
        "TEMPORAL_TLS": "true",
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(certificates["client_cert"]),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(certificates["client_key"]),
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(certificates["server_ca_cert"]),
        "TEMPORAL_TLS_SERVER_NAME": "temporal.internal.example",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    config = connect_config()
    assert (config["target_host"], config["namespace"]) == (
        "temporal.internal.example:7233",
        "orders",
    )
    assert isinstance(config["tls"], TLSConfig)
    assert config["tls"].client_cert == certificates["client_cert"].read_bytes()
    assert config["tls"].domain == "temporal.internal.example"

    monkeypatch.setenv("TEMPORAL_API_KEY", "key-from-the-environment")
    monkeypatch.setenv("TEMPORAL_TLS", "false")
    for name in ("CLIENT_CERT", "CLIENT_KEY", "SERVER_CA_CERT"):
        monkeypatch.delenv(f"TEMPORAL_TLS_{name}_PATH")
    config = connect_config()
    assert config["api_key"] == "key-from-the-environment"
    assert config["tls"] is False  # TEMPORAL_TLS=false wins over the API key's default


def test_environment_variables_override_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, monkeypatch, CLOUD_PROFILE)
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "orders-staging.a1b2c")
    monkeypatch.setenv("TEMPORAL_API_KEY", "rotated-key")
    config = connect_config()
    assert config["target_host"] == "us-east-1.aws.api.temporal.io:7233"  # from the file
    assert (config["namespace"], config["api_key"]) == ("orders-staging.a1b2c", "rotated-key")


def test_an_unknown_profile_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, monkeypatch, CLOUD_PROFILE)
    with pytest.raises(TemporalConnectionError) as caught:
        connect_config("clod")
    message = str(caught.value)
    assert "Profile 'clod' not found" in message
    assert f"profiles in {path}: cloud" in message
    assert "Check TEMPORAL_PROFILE, TEMPORAL_CONFIG_FILE" in message

    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(TemporalConnectionError, match=r"there is no config file at .*missing"):
        connect_config("cloud")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent/client.pem"}, "No such file"),
        (
            {"TEMPORAL_TLS_CLIENT_CERT_PATH": "/a.pem", "TEMPORAL_TLS_CLIENT_CERT_DATA": "PEM"},
            "Cannot specify both TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_CERT_DATA",
        ),
    ],
)
def test_a_wrong_certificate_setting_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, setting: dict[str, str], message: str
) -> None:
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TemporalConnectionError, match=message):
        connect_config()


async def test_an_api_key_profile_connects(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on the local dev server (plain text, so TLS is turned off in the profile)."""
    address = client.service_client.config.target_host
    write_config(
        tmp_path,
        monkeypatch,
        f"""
[profile.keyed]
address = "{address}"
namespace = "{client.namespace}"
api_key = "key-123"

[profile.keyed.tls]
disabled = true
""",
    )
    keyed = await connect("keyed")
    assert keyed.service_client.config.api_key == "key-123"
    assert await keyed.service_client.check_health()


async def test_the_starter_says_which_profiles_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, monkeypatch, CLOUD_PROFILE)
    err = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            return starter.main(["--profile", "clod", "status", "order-1"])

    assert await asyncio.to_thread(run) == 1  # its own event loop, as on the command line
    assert "Profile 'clod' not found" in err.getvalue()
    assert "profiles in" in err.getvalue() and "Traceback" not in err.getvalue()
