"""compose.yaml, checked by parsing it: Docker does not run on our machines, so these tests hold the
file to what `docker compose up` needs from it and to what the app reads from its environment."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import SETTINGS_TABLE

ROOT = Path(__file__).resolve().parents[1]
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY")
STATEFUL = {"postgres": "/var/lib/postgresql/data", "qdrant": "/qdrant/storage", "minio": "/data", "prometheus": "/prometheus", "app": "/data"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"app", "postgres", "qdrant", "minio", "minio-init", "redis", "prometheus"}
    assert compose["services"]["app"]["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert (ROOT / "Dockerfile").is_file()


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "minio-init":
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert "interval" in check and "retries" in check, name


def test_app_starts_after_its_servers_are_healthy_and_the_bucket_exists(compose: dict[str, Any]) -> None:
    depends = compose["services"]["app"]["depends_on"]
    assert {k: v["condition"] for k, v in depends.items()} == {
        "postgres": "service_healthy",
        "qdrant": "service_healthy",
        "redis": "service_healthy",
        "minio-init": "service_completed_successfully",
    }
    init = compose["services"]["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = "\n".join(init["command"])
    assert "mc mb --ignore-existing" in script and "${S3_BUCKET}" in script


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, target in STATEFUL.items():
        mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"][name]["volumes"]}
        assert mounts.get(target) in declared, f"{name} keeps {target} outside a named volume"


def test_app_environment_uses_only_settings_the_app_reads(compose: dict[str, Any]) -> None:
    known = {s.env for s in SETTINGS_TABLE}
    environment = compose["services"]["app"]["environment"]
    assert set(environment) <= known, set(environment) - known
    assert {"DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY", "REDIS_URL", "METRICS_PORT"} <= set(environment)
    assert environment["LOG_FORMAT"] == "json"


def test_prometheus_scrapes_the_apps_metrics_port(compose: dict[str, Any]) -> None:
    port = compose["services"]["app"]["environment"]["METRICS_PORT"]
    assert port in compose["services"]["app"]["expose"]
    mounted = [v for v in compose["services"]["prometheus"]["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro")]
    config = yaml.safe_load((ROOT / mounted[0].split(":")[0]).read_text())
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"app:{port}"]


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.fullmatch(str(value)), f"{name}.{key} must come from .env"
            masked = INTERPOLATION.sub(lambda m: f"<{m.group(1)}>", str(value))
            if "://" in masked and "@" in masked:
                credentials = masked.split("://", 1)[1].rsplit("@", 1)[0]
                password = credentials.split(":", 1)[1] if ":" in credentials else ""
                assert re.fullmatch(r"<[A-Z0-9_]+>", password), f"{name}.{key} has a literal password"


def test_env_example_names_every_variable_and_holds_no_real_secret(env_example: dict[str, str]) -> None:
    used = set(INTERPOLATION.findall((ROOT / "compose.yaml").read_text()))
    assert used <= set(env_example), used - set(env_example)
    for name, value in env_example.items():
        if SECRET_NAME.search(name):
            assert value == "change-me", f"{name} in .env.example must be the change-me placeholder"


def test_required_secrets_stop_compose_when_missing() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for name in ("POSTGRES_PASSWORD", "QDRANT_API_KEY", "S3_SECRET_KEY", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "AUTH_SECRET"):
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", text), f"{name} has no ':?' guard"


def test_dotenv_is_never_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "add .env to .gitignore"
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_only_the_app_minio_and_prometheus_are_published(compose: dict[str, Any]) -> None:
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"app", "minio", "prometheus"}
    for port in compose["services"]["prometheus"]["ports"]:
        assert port.startswith("127.0.0.1:")


def test_dockerfile_installs_cpu_torch_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"^USER (?!root)\S+", text, flags=re.M)
    assert "visual-anomaly check" in text and "streamlit run app/Home.py" in text
    for path in ("app", "core", ".streamlit", "pyproject.toml", "README.md"):
        assert (ROOT / path).exists(), path
