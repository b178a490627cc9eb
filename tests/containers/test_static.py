"""Static checks of the images and the compose file: no Docker, no network, a few seconds."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.containers.parsing import (
    Stage,
    dockerignore_patterns,
    env_names_in_sources,
    imported_modules,
    interpolate,
    is_ignored,
    module_exists,
    module_path,
    parse_dockerfile,
    service_environment,
)

yaml = pytest.importorskip("yaml", reason="PyYAML parses docker-compose.yml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
GATEWAY_DOCKERFILE = "docker/gateway.Dockerfile"
WORKER_DOCKERFILE = "docker/worker.Dockerfile"
DOCKERFILES = (GATEWAY_DOCKERFILE, WORKER_DOCKERFILE)
# Which requirements file each image installs (the exact pins live there, nowhere else).
REQUIREMENTS = {GATEWAY_DOCKERFILE: "gateway.txt", WORKER_DOCKERFILE: "worker.txt"}
# Where the services read their environment: settings, the registry bootstrap, the
# process entry points, and the dev issuer (TINYLLAMA_DEV_KEYS).
ENV_SOURCES = (
    "services/*/settings.py",
    "services/registry/factory.py",
    "services/*/__main__.py",
    "services/devstack/identity.py",
)
# Variables read by libraries and the images themselves, not by our code.
THIRD_PARTY_ENV = {
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PIP_NO_CACHE_DIR",
    "TOKENIZERS_PARALLELISM",
    "NVIDIA_DRIVER_CAPABILITIES",
}
GATEWAY_SERVICE = "gateway"
WORKER_SERVICES = ("worker", "worker-gpu")
PYTHON_SERVICES = (GATEWAY_SERVICE, *WORKER_SERVICES)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services by name."""
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfiles() -> dict[str, list[Stage]]:
    """Each Dockerfile, split into stages."""
    return {name: parse_dockerfile((ROOT / name).read_text()) for name in DOCKERFILES}


@pytest.fixture(scope="module")
def env_names() -> set[str]:
    """Every TINYLLAMA_*/REDIS_URL name the services' code reads."""
    paths = sorted({p for pattern in ENV_SOURCES for p in ROOT.glob(pattern)})
    assert paths, "no settings modules found"
    return env_names_in_sources(paths)


def _dockerfile_of(service: dict[str, Any]) -> str | None:
    build = service.get("build")
    if build is None:
        return None
    return build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"


def _python_commands(
    services: dict[str, dict[str, Any]], dockerfiles: dict[str, list[Stage]]
) -> list[tuple[str, list[str]]]:
    """(where, argv) of every command that starts python: compose commands, CMDs, healthchecks."""
    found: list[tuple[str, list[str]]] = []
    for name, service in services.items():
        command = service.get("command")
        if isinstance(command, list):
            found.append((f"compose {name} command", [str(c) for c in command]))
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"):
            found.append((f"compose {name} healthcheck", [str(c) for c in test[1:]]))
    for file, stages in dockerfiles.items():
        for instruction in stages[-1].all("CMD") + stages[-1].all("HEALTHCHECK"):
            argv = instruction.exec_form()
            assert argv is not None, f"{file}: {instruction.keyword} is not in exec (JSON) form"
            found.append((f"{file} {instruction.keyword}", argv))
    return [(where, argv) for where, argv in found if argv and argv[0] in ("python", "python3")]


def _container_port(mapping: str) -> int:
    return int(interpolate(str(mapping)).rsplit(":", 1)[-1].split("/")[0])


def _ports_in(text: str) -> set[int]:
    return {int(p) for p in re.findall(r"https?://[^/:'\"]+:(\d+)", text)} | {
        int(p) for p in re.findall(r"'TINYLLAMA_PORT',\s*'(\d+)'", text)
    }


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration):
        total += float(amount) * units[unit]
    return total


# --- compose -----------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec() -> None:
    """docker-compose.yml is valid under the compose spec schema (check-jsonschema's copy)."""
    assert importlib.util.find_spec("check_jsonschema"), "install requirements/dev.txt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_commands_run_modules_that_exist(services, dockerfiles) -> None:
    """Every ``python -m X`` in compose and the Dockerfiles names a runnable module here."""
    modules = [
        (where, argv[argv.index("-m") + 1])
        for where, argv in _python_commands(services, dockerfiles)
        if "-m" in argv
    ]
    assert modules, "no python -m commands found"
    missing = [(where, m) for where, m in modules if module_path(ROOT, m) is None]
    assert not missing, f"modules that do not exist: {missing}"


def test_inline_python_compiles_and_imports_modules_that_exist(services, dockerfiles) -> None:
    """Every ``python -c`` snippet compiles and imports only first-party modules that exist."""
    snippets = [
        (where, argv[argv.index("-c") + 1])
        for where, argv in _python_commands(services, dockerfiles)
        if "-c" in argv
    ]
    assert snippets, "no python -c commands found"
    for where, code in snippets:
        compile(code, where, "exec")
        for module in imported_modules(code):
            if module.split(".")[0] in ("services", "clients"):
                assert module_exists(ROOT, module), f"{where} imports missing {module}"


def test_compose_environment_names_are_ones_the_services_read(services, env_names) -> None:
    """Each variable compose sets is read by our code (or a library): no silent typos."""
    unknown = {
        (name, variable)
        for name, service in services.items()
        for variable in service_environment(service)
        if variable not in env_names and variable not in THIRD_PARTY_ENV
    }
    assert not unknown, f"set in compose but read by nothing: {sorted(unknown)}"


def test_dockerfile_env_names_are_ones_the_services_read(dockerfiles, env_names) -> None:
    """Each ENV in the images is read by our code (or a library)."""
    unknown = {
        (file, variable)
        for file, stages in dockerfiles.items()
        for stage in stages
        for variable in stage.env()
        if variable not in env_names and variable not in THIRD_PARTY_ENV
    }
    assert not unknown, f"set in an image but read by nothing: {sorted(unknown)}"


def test_gateway_settings_load_from_the_compose_environment(services) -> None:
    """The gateway's settings load from compose's environment and bind all interfaces."""
    from services.gateway.settings import load_settings

    settings = load_settings(service_environment(services[GATEWAY_SERVICE]))
    assert settings.host == "0.0.0.0"
    assert settings.env == "local"
    assert settings.redis_url.startswith("redis://redis:")


def test_worker_settings_load_from_the_compose_environment(services) -> None:
    """Each worker's settings load from compose's environment, cache on a named volume."""
    from services.worker.settings import load_settings

    for name in WORKER_SERVICES:
        settings = load_settings(service_environment(services[name]))
        assert settings.redis_url.startswith("redis://redis:"), name
        mounts = [str(v).split(":") for v in services[name].get("volumes", [])]
        assert any(
            len(m) >= 2 and not m[0].startswith((".", "/")) and Path(m[1]) == settings.cache_dir
            for m in mounts
        ), f"{name}: TINYLLAMA_CACHE_DIR {settings.cache_dir} is not on a named volume"


def test_default_worker_is_cpu_and_gpu_worker_reserves_an_nvidia_gpu(services) -> None:
    """``worker`` runs the CPU build by default; ``worker-gpu`` (profile gpu) holds one GPU."""
    cpu, gpu = services["worker"], services["worker-gpu"]
    assert "profiles" not in cpu
    assert cpu["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert service_environment(cpu)["TINYLLAMA_DEVICE"] == "cpu"
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert service_environment(gpu)["TINYLLAMA_DEVICE"].startswith("cuda")
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices


def test_images_built_differently_have_different_names(services) -> None:
    """Services built with different Dockerfiles/args tag different images (no overwrite)."""
    by_image: dict[str, set[str]] = {}
    for service in services.values():
        if "build" in service:
            build = service["build"]
            key = repr((build.get("dockerfile"), sorted((build.get("args") or {}).items())))
            by_image.setdefault(service["image"], set()).add(key)
    clashes = {image: keys for image, keys in by_image.items() if len(keys) > 1}
    assert not clashes, f"one image name, several builds: {clashes}"


def test_gateway_port_agrees_everywhere(services, dockerfiles) -> None:
    """Compose's container port == TINYLLAMA_PORT == EXPOSE == image ENV == healthcheck ports."""
    gateway = services[GATEWAY_SERVICE]
    stage = dockerfiles[GATEWAY_DOCKERFILE][-1]
    ports = {_container_port(p) for p in gateway["ports"]}
    ports.add(int(service_environment(gateway)["TINYLLAMA_PORT"]))
    ports.update(int(i.value.split("/")[0]) for i in stage.all("EXPOSE"))
    ports.add(int(stage.env()["TINYLLAMA_PORT"]))
    healthchecks = [" ".join(gateway["healthcheck"]["test"])]
    healthchecks += [" ".join(i.exec_form() or []) for i in stage.all("HEALTHCHECK")]
    for text in healthchecks:
        found = _ports_in(text)
        assert found, f"no port in healthcheck {text!r}"
        ports.update(found)
    assert len(ports) == 1, f"gateway ports disagree: {sorted(ports)}"


def test_gateway_healthchecks_ask_health_with_python(services, dockerfiles) -> None:
    """Gateway healthchecks GET /health with python (slim images carry no curl or wget)."""
    stage = dockerfiles[GATEWAY_DOCKERFILE][-1]
    tests = [services[GATEWAY_SERVICE]["healthcheck"]["test"][1:]]
    tests += [i.exec_form() for i in stage.all("HEALTHCHECK")]
    assert len(tests) == 2
    for argv in tests:
        assert argv[0] == "python"
        assert re.search(r"https?://127\.0\.0\.1:[^/]+/health'", " ".join(argv))


def test_published_ports_listen_on_loopback_only(services) -> None:
    """Every published port binds 127.0.0.1: a laptop stack is not a LAN service."""
    published = [str(p) for s in services.values() for p in s.get("ports", [])]
    assert published
    assert all(p.startswith("127.0.0.1:") for p in published), published


def test_python_services_run_under_an_init_with_a_grace_period(services) -> None:
    """Gateway and workers get an init (signals reach python) and time to drain on stop."""
    from services.worker.settings import WorkerSettings

    drain = WorkerSettings().drain_timeout_s
    for name in PYTHON_SERVICES:
        service = services[name]
        assert service.get("init") is True, name
        assert _seconds(str(service["stop_grace_period"])) > 0, name
    for name in WORKER_SERVICES:
        assert _seconds(str(services[name]["stop_grace_period"])) > drain, name


def test_gateway_waits_for_healthy_redis_and_the_dev_keys(services) -> None:
    """The gateway starts after Redis answers and the dev-keys job has written the JWKS."""
    depends = services[GATEWAY_SERVICE]["depends_on"]
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["dev-keys"]["condition"] == "service_completed_successfully"


def test_workers_wait_for_healthy_redis(services) -> None:
    """Each worker starts after Redis answers its healthcheck."""
    for name in WORKER_SERVICES:
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_redis_healthcheck_pings(services) -> None:
    """Redis is healthy when ``redis-cli ping`` answers."""
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_gateway_trusts_the_jwks_that_dev_keys_writes(compose, services) -> None:
    """dev-keys writes into a volume the gateway mounts where its JWKS URL and CLI look."""
    keys, gateway = services["dev-keys"], services[GATEWAY_SERVICE]
    code = keys["command"][keys["command"].index("-c") + 1]
    written = re.search(r"ensure_dev_key\(Path\('([^']+)'\)\)", code).group(1)
    volume = next(v.split(":")[0] for v in keys["volumes"] if v.split(":")[1] == written)
    assert volume in compose["volumes"], f"{volume} is not a named volume"
    mounted = {v.split(":")[0]: v.split(":")[1] for v in gateway["volumes"]}
    assert mounted[volume] == written
    environment = service_environment(gateway)
    assert environment["TINYLLAMA_JWKS_URL"] == f"file://{written}/jwks.json"
    assert environment["TINYLLAMA_DEV_KEYS"] == written
    assert environment["TINYLLAMA_JWT_ISSUER"] == "tinyllama-local"


# --- Dockerfiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("file", DOCKERFILES)
def test_images_install_the_pinned_requirements(file, dockerfiles) -> None:
    """The builder copies requirements/<image>.txt and pip-installs it with -r."""
    wanted = REQUIREMENTS[file]
    builder = dockerfiles[file][0]
    copies = [i.value.split() for i in builder.all("COPY")]
    target = next(c[-1] for c in copies if f"requirements/{wanted}" in c[:-1])
    runs = " ".join(i.value for i in builder.all("RUN"))
    assert re.search(rf"pip install [^;&]*-r {re.escape(target)}", runs), runs


@pytest.mark.parametrize("file", DOCKERFILES)
def test_images_pin_no_versions_of_their_own(file, dockerfiles) -> None:
    """No ``pkg==1.2`` in a Dockerfile: versions come from requirements/ only."""
    runs = " ".join(i.value for s in dockerfiles[file] for i in s.all("RUN"))
    assert not re.findall(r"[A-Za-z0-9_.\-\[\]]+==\d", runs)


def test_worker_image_reads_the_torch_pin_from_requirements(dockerfiles) -> None:
    """The worker's torch version is the one requirements/worker.txt pins, read at build time."""
    requirements = ROOT / "requirements" / "worker.txt"
    pin = re.search(r"^torch==([^\s#;]+)", requirements.read_text(), re.M).group(1)
    runs = " ".join(i.value for i in dockerfiles[WORKER_DOCKERFILE][0].all("RUN"))
    expression = re.search(r"sed -n '([^']+)' /tmp/requirements/worker\.txt", runs).group(1)
    result = subprocess.run(
        ["sed", "-n", expression, str(requirements)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == pin
    assert '"torch==$torch_version"' in runs


@pytest.mark.parametrize("file", DOCKERFILES)
def test_runtime_stage_copies_the_venv_from_a_builder(file, dockerfiles) -> None:
    """Multi-stage: the runtime copies the builder's venv and runs no pip itself."""
    stages = dockerfiles[file]
    assert len(stages) >= 2
    runtime = stages[-1]
    builders = {s.name for s in stages[:-1]}
    copies = [i.value.split() for i in runtime.all("COPY") if i.value.startswith("--from=")]
    assert any(c[0].removeprefix("--from=") in builders and c[1] == "/opt/venv" for c in copies)
    assert "pip" not in " ".join(i.value for i in runtime.all("RUN"))
    assert runtime.env()["PATH"].startswith("/opt/venv/bin:")


@pytest.mark.parametrize("file", DOCKERFILES)
def test_runtime_stage_runs_as_a_non_root_user(file, dockerfiles) -> None:
    """The last USER of each runtime stage is neither root nor uid 0."""
    users = dockerfiles[file][-1].all("USER")
    assert users, f"{file}: runtime stage has no USER"
    user = users[-1].value.split(":")[0]
    assert user not in ("root", "0")


@pytest.mark.parametrize("file", DOCKERFILES)
def test_images_stop_on_sigterm_and_have_a_healthcheck(file, dockerfiles) -> None:
    """STOPSIGNAL SIGTERM, an exec-form python CMD and a HEALTHCHECK in each runtime stage."""
    runtime = dockerfiles[file][-1]
    assert [i.value for i in runtime.all("STOPSIGNAL")] == ["SIGTERM"]
    cmd = runtime.all("CMD")[-1].exec_form()
    assert cmd is not None
    assert cmd[:2] == ["python", "-m"]
    assert runtime.all("HEALTHCHECK")


def test_gateway_image_binds_all_interfaces_and_exposes_its_port(dockerfiles) -> None:
    """The gateway image sets TINYLLAMA_HOST=0.0.0.0 (the code defaults to loopback)."""
    from services.gateway.settings import GatewaySettings

    runtime = dockerfiles[GATEWAY_DOCKERFILE][-1]
    assert GatewaySettings().host == "127.0.0.1"  # why the image must override it
    assert runtime.env()["TINYLLAMA_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("file", DOCKERFILES)
def test_copied_sources_exist_and_survive_dockerignore(file, dockerfiles) -> None:
    """Each COPY source exists in the repo and is not dropped by .dockerignore."""
    patterns = dockerignore_patterns((ROOT / ".dockerignore").read_text())
    for stage in dockerfiles[file]:
        for instruction in stage.all("COPY"):
            words = instruction.value.split()
            if words[0].startswith("--from="):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"{file}: COPY {source} does not exist"
                assert not is_ignored(source, patterns), f"{file}: .dockerignore drops {source}"


def test_dockerignore_drops_bulky_and_private_folders() -> None:
    """The build context leaves out .git, the venv, caches and node_modules."""
    patterns = dockerignore_patterns((ROOT / ".dockerignore").read_text())
    for path in (
        ".git",
        ".venv",
        ".cache/test",
        "node_modules",
        "cdk.out",
        "services/__pycache__/x.pyc",
    ):
        assert is_ignored(path, patterns), path


def test_compose_test_script_is_valid_bash() -> None:
    """docker/compose-test.sh parses (``bash -n``): CI does not find a typo at run time."""
    script = ROOT / "docker" / "compose-test.sh"
    result = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
