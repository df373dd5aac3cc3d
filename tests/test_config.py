"""Config schema + loader: defaults, interpolation, merging, error reporting, redaction."""

from __future__ import annotations

import pickle
from pathlib import Path

import attrs
import pytest
import yaml

import config
from config import (
    BackendConfig,
    ClassifierConfig,
    ConfigError,
    EscalationConfig,
    GatewayConfig,
    GuardConfig,
    JudgeConfig,
    RoutingConfig,
    dump_yaml,
    load_config,
    parse_config,
    redacted,
    reference_rows,
)

EXAMPLE = Path(config.__file__).parent / "example.yaml"


def parse(text: str, env: dict[str, str] | None = None) -> GatewayConfig:
    return parse_config(yaml.safe_load(text), env or {}, source="test.yaml")


def problems(text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return dict(info.value.problems)


# --- defaults -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("listen.host", "127.0.0.1"),
        ("listen.port", 8000),
        ("backends.local.kind", "llamacpp"),
        ("backends.local.base_url", "http://127.0.0.1:8080/v1"),
        ("backends.local.supports_prefill", True),
        ("backends.cloud.kind", "cerebras"),
        ("backends.cloud.base_url", "https://api.cerebras.ai/v1"),
        ("backends.cloud.model", "zai-glm-4.7"),
        ("backends.cloud.max_output_tokens", 16000),
        ("backends.cloud.api_key", ""),
        ("models.routed", "glm-4.7"),
        ("routing.strategy", "complexity"),
    ],
)
def test_defaults(path: str, expected: object) -> None:
    value: object = load_config(None, env={})
    for part in path.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    assert value == expected
    assert type(value) is type(expected)


def test_empty_file_and_empty_mapping_are_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty, env={}) == GatewayConfig()
    assert parse("{}") == GatewayConfig()


def test_example_yaml_is_exactly_the_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == GatewayConfig()


def test_example_yaml_takes_keys_from_environment() -> None:
    cfg = load_config(EXAMPLE, env={"CEREBRAS_API_KEY": "csk-example", "LLAMA_API_KEY": "llama-key"})
    assert cfg.backends["cloud"].api_key == "csk-example"
    assert cfg.backends["local"].api_key == "llama-key"


def test_example_yaml_mentions_every_key() -> None:
    """The example documents every leaf, so a new schema field can't be forgotten there."""
    plain = yaml.safe_load(EXAMPLE.read_text())
    for path, _, _ in reference_rows():
        node = plain
        for part in path.split("."):
            assert part in node, f"{path} missing from example.yaml"
            node = node[part]


# --- interpolation ------------------------------------------------------------------------


def test_interpolation_set_default_and_escape() -> None:
    cfg = parse(
        """
        backends:
          cloud:
            api_key: ${KEY}
            base_url: https://${HOST:-api.example.com}/v1
            model: ${MODEL:-glm-4.7}
          local:
            model: cost$$5 ${UNSET:-x} $${NOT_EXPANDED}
        """,
        env={"KEY": "csk-123", "MODEL": ""},
    )
    assert cfg.backends["cloud"].api_key == "csk-123"
    assert cfg.backends["cloud"].base_url == "https://api.example.com/v1"
    assert cfg.backends["cloud"].model == "glm-4.7"  # `:-` also applies when the variable is empty
    assert cfg.backends["local"].model == "cost$5 x ${NOT_EXPANDED}"


def test_interpolation_in_headers() -> None:
    cfg = parse("backends: {cloud: {headers: {X-Team: '${TEAM}'}}}", env={"TEAM": "core"})
    assert cfg.backends["cloud"].headers == {"X-Team": "core"}


def test_missing_variable_is_reported_by_path() -> None:
    found = problems("backends: {cloud: {api_key: '${CEREBRAS_API_KEY}'}}")
    assert found == {"backends.cloud.api_key": "environment variable CEREBRAS_API_KEY is not set"}


def test_malformed_reference_is_reported() -> None:
    found = problems("listen: {host: 'a${1BAD}b'}\nlogging: {file: 'x${oops'}")
    assert set(found) == {"listen.host", "logging.file"}
    assert "bad reference '${1BAD}'" in found["listen.host"]
    assert "unterminated" in found["logging.file"]


def test_load_config_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("backends: {cloud: {api_key: '${GTS_TEST_KEY}'}}\n")
    monkeypatch.setenv("GTS_TEST_KEY", "from-os-environ")
    cfg = load_config(path)
    monkeypatch.setenv("GTS_TEST_KEY", "changed-later")
    assert cfg.backends["cloud"].api_key == "from-os-environ"


def test_interpolated_scalars_are_coerced_to_field_type() -> None:
    cfg = parse(
        """
        listen: {port: '${PORT:-8123}'}
        backends: {cloud: {enabled: '${CLOUD_ON}', read_timeout_s: '${RT}'}}
        """,
        env={"CLOUD_ON": "False", "RT": "30"},
    )
    assert cfg.listen.port == 8123 and type(cfg.listen.port) is int
    assert cfg.backends["cloud"].enabled is False
    assert cfg.backends["cloud"].read_timeout_s == 30.0 and type(cfg.backends["cloud"].read_timeout_s) is float


def test_interpolated_value_still_checked() -> None:
    found = problems("listen: {port: '${PORT}'}", env={"PORT": "abc"})
    assert found == {"listen.port": "expected integer, got string 'abc' (from ${PORT})"}
    found = problems("listen: {port: '${PORT}'}", env={"PORT": "70000"})
    assert found == {"listen.port": "must be a TCP port 1-65535 (got 70000)"}


def test_literal_string_is_not_coerced() -> None:
    assert problems("listen: {port: '8000'}") == {"listen.port": "expected integer, got string '8000'"}
    # Text around the reference means it is a string, not a number.
    assert problems("listen: {port: '${P}0'}", env={"P": "800"}) == {
        "listen.port": "expected integer, got string '8000'"
    }


# --- merging and switching the cloud ------------------------------------------------------


def test_partial_cloud_section_merges_with_cerebras_defaults() -> None:
    cfg = parse("backends: {cloud: {api_key: csk-1, read_timeout_s: 90}}")
    expected = attrs.evolve(config.CLOUD_DEFAULT, api_key="csk-1", read_timeout_s=90.0)
    assert cfg.backends["cloud"] == expected
    assert cfg.backends["local"] == config.LOCAL_DEFAULT
    assert cfg.listen == GatewayConfig().listen


def test_null_section_means_defaults() -> None:
    assert parse("listen:\nbackends: {cloud: null}") == GatewayConfig()


def test_switch_cloud_model_id() -> None:
    cfg = parse("backends: {cloud: {model: gpt-oss-120b}}")
    assert cfg.backends["cloud"].model == "gpt-oss-120b"
    assert cfg.backends["cloud"].kind == "cerebras"


def test_swap_cloud_for_other_openai_compatible_api() -> None:
    cfg = parse(
        """
        backends:
          cloud:
            kind: openai
            base_url: https://api.z.ai/api/paas/v4
            model: glm-4.7
            api_key: ${ZAI_API_KEY}
        """,
        env={"ZAI_API_KEY": "zai-secret"},
    )
    cloud = cfg.backends["cloud"]
    assert isinstance(cloud, BackendConfig)
    assert (cloud.kind, cloud.base_url, cloud.model, cloud.api_key) == (
        "openai", "https://api.z.ai/api/paas/v4", "glm-4.7", "zai-secret")
    assert cfg.backend("cloud") is cloud


# --- errors -------------------------------------------------------------------------------


def test_all_problems_reported_together_by_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse(
            """
            listen: {prot: 8000, host: 17}
            backends:
              cloud: {kind: anthropic, timeout_s: 3, read_timeout_s: -3, headers: {X-A: 1}}
              local: {context_window: true, connect_timeout_s: yes, enabled: 'true'}
            routing: local
            logging: {level: null}
            bogus: 1
            """
        )
    err = info.value
    found = dict(err.problems)
    assert found == {
        "listen.prot": "unknown key (did you mean 'port'?)",
        "listen.host": "expected string, got integer 17",
        "backends.cloud.kind": "must be one of llamacpp, cerebras, openai (got 'anthropic')",
        "backends.cloud.timeout_s": "unknown key (did you mean 'read_timeout_s'?)",
        "backends.cloud.read_timeout_s": "must be > 0 (got -3.0)",
        "backends.cloud.headers.X-A": "expected string value, got integer 1",
        "backends.local.context_window": "expected integer, got boolean true",
        "backends.local.connect_timeout_s": "expected number, got boolean true",
        "backends.local.enabled": "expected boolean (true/false), got string 'true'",
        "routing": "expected a mapping of keys, got string 'local'",
        "logging.level": "expected string, got null",
        "bogus": "unknown key (expected one of: listen, auth, limits, backends, models, routing, budget, "
                 "ledger, server, logging)",
    }
    assert len(err.problems) == len(found)
    text = str(err)
    assert text.splitlines()[0] == "invalid config test.yaml:"
    assert "  backends.cloud.read_timeout_s: must be > 0 (got -3.0)" in text.splitlines()


def test_top_level_must_be_a_mapping() -> None:
    assert problems("- a\n- b") == {"<root>": "expected a mapping of keys, got list"}


def test_non_finite_float_rejected() -> None:
    assert problems("server: {keepalive_s: .inf}") == {"server.keepalive_s": "must be a finite number (got inf)"}


def test_wrong_type_for_secret_does_not_echo_value() -> None:
    found = problems("backends: {cloud: {api_key: 123456789}}")
    assert found == {"backends.cloud.api_key": "expected string, got integer (value hidden)"}


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listen:\n  host: a\n port: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    [(where, message)] = info.value.problems
    assert where == "<file>"
    assert message.startswith("invalid YAML at line 3, column 2:")
    assert str(info.value).startswith(f"invalid config {path}:\n  <file>: invalid YAML at line 3")


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    [(where, message)] = info.value.problems
    assert where == "<file>"
    assert message.startswith("cannot read:") and "nope.yaml" in message
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, env={})  # a directory


def test_cross_checks_duplicate_model_ids() -> None:
    found = problems("models: {local: glm-4.7}")
    assert list(found) == ["models"]
    assert "must differ" in found["models"]


def test_cross_checks_only_strategy_needs_its_backend() -> None:
    found = problems("backends: {local: {enabled: false}}\nrouting: {strategy: local_only}")
    assert found == {"routing.strategy": "is local_only, but no local backend is enabled"}
    cfg = parse("backends: {local: {enabled: false}}\nrouting: {strategy: cloud_only}")
    assert cfg.backends["local"].enabled is False


def test_keyword_lists_load_and_reject_non_strings() -> None:
    cfg = parse("routing: {classifier: {complex_keywords: [all, 'race condition']}}")
    assert cfg.routing.classifier.complex_keywords == ("all", "race condition")
    found = problems("routing: {classifier: {simple_keywords: [typo, 3], complex_keywords: nope}}")
    assert found == {"routing.classifier.simple_keywords[1]": "expected a string, got integer 3",
                     "routing.classifier.complex_keywords": "expected a list of strings, got string 'nope'"}


def test_cross_checks_skipped_while_fields_are_wrong() -> None:
    # Duplicate ids would be a cross-check problem; the field problem alone is reported.
    found = problems("models: {local: glm-4.7}\nlisten: {port: 0}")
    assert found == {"listen.port": "must be a TCP port 1-65535 (got 0)"}


def test_config_error_pickles() -> None:
    err = ConfigError([("a.b", "bad")], "x.yaml")
    back = pickle.loads(pickle.dumps(err))
    assert back.problems == [("a.b", "bad")] and str(back) == str(err)


# --- redaction and reference --------------------------------------------------------------


def test_redaction_never_shows_secrets() -> None:
    secret = "csk-TOPSECRET-0123456789"
    cfg = parse(
        """
        backends:
          cloud: {api_key: '${KEY}', headers: {Authorization: 'Bearer ${KEY}', X-Team: core}}
        """,
        env={"KEY": secret},
    )
    assert cfg.backends["cloud"].api_key == secret
    text = dump_yaml(cfg)
    assert "TOPSECRET" not in text
    plain = yaml.safe_load(text)
    assert plain["backends"]["cloud"]["api_key"] == "***"
    assert plain["backends"]["local"]["api_key"] == ""
    assert plain["backends"]["cloud"]["headers"] == {"Authorization": "***", "X-Team": "core"}
    assert plain["listen"] == {"host": "127.0.0.1", "port": 8000, "allow_open_bind": False}
    assert redacted(cfg)["backends"]["cloud"]["model"] == "zai-glm-4.7"


def test_dump_of_defaults_round_trips() -> None:
    assert parse(dump_yaml(GatewayConfig())) == GatewayConfig()


def test_reference_rows_cover_every_leaf_with_merged_defaults() -> None:
    rows = {path: (default, doc) for path, default, doc in reference_rows()}
    assert rows["listen.port"][0] == "8000"
    assert rows["backends.cloud.model"][0] == '"zai-glm-4.7"'
    assert rows["backends.local.supports_prefill"][0] == "true"
    assert rows["backends.cloud.headers"][0] == "{}"
    assert all(doc for _, doc in rows.values())
    # listen 3, auth 3, limits 5, backends 2 x BackendConfig, models 4, routing (+ classifier, judge,
    # escalation, guard), budget 3, ledger 1, server 3, logging 5
    sections = (ClassifierConfig, JudgeConfig, EscalationConfig, GuardConfig)
    routing = len(attrs.fields(RoutingConfig)) - len(sections) + sum(len(attrs.fields(s)) for s in sections)
    assert len(rows) == 3 + 3 + 5 + 2 * len(attrs.fields(BackendConfig)) + 4 + routing + 3 + 1 + 3 + 5


def test_readme_config_reference_is_up_to_date() -> None:
    from config.reference import render

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert render(readme) == readme, "run: python -m config.reference README.md"


def test_open_bind_without_keys_is_refused_naming_the_setting() -> None:
    found = problems("listen: {host: 0.0.0.0}")
    assert list(found) == ["listen.host"]
    assert "listen.allow_open_bind" in found["listen.host"] and "auth.keys" in found["listen.host"]
    assert parse("listen: {host: 0.0.0.0, allow_open_bind: true}").listen.host == "0.0.0.0"
    cfg = parse("listen: {host: 0.0.0.0}\nauth: {keys: ['${KEY}']}", env={"KEY": "gw-secret-key-123"})
    assert cfg.auth.active_keys == ("gw-secret-key-123",)
    assert "gw-secret-key-123" not in dump_yaml(cfg)
    assert parse("listen: {host: '::1'}").listen.loopback


def test_old_keyword_classifier_config_migrates_to_the_keywords_method() -> None:
    # A config written for the keyword classifier (no `method`) keeps routing as it did...
    old = "routing: {classifier: {complex_keywords: [payments], complex_threshold: 1.5}}"
    cfg = parse(old)
    assert cfg.routing.classifier.method == "keywords"
    assert cfg.routing.classifier.complex_keywords == ("payments",)
    # ...and check-config shows it in the new shape, which loads to the same config.
    shown = yaml.safe_load(dump_yaml(cfg))["routing"]["classifier"]
    assert shown["method"] == "keywords" and parse(dump_yaml(cfg)) == cfg
    # A config that names its method, or sets only new fields, is left alone.
    assert parse("routing: {classifier: {method: learned, complex_keywords: [x]}}").routing.classifier.method == \
        "learned"
    assert parse("routing: {classifier: {always_cloud: [payments]}}").routing.classifier.method == "learned"


def test_escalation_patterns_are_checked() -> None:
    found = problems("routing: {escalation: {patterns: {'Bad-Name': x, ok: '('}}}")
    assert list(found) == ["routing.escalation.patterns"]
    assert "lower_snake_case" in found["routing.escalation.patterns"]
    found = problems("routing: {escalation: {patterns: {ok: '('}}}")
    assert "not a regular expression" in found["routing.escalation.patterns"]


def test_the_two_key_backends_of_older_configs_migrate_to_named_entries_in_tiers() -> None:
    # The shape every config had before pools: a role left out is there with its defaults, and
    # an entry merges onto its role's default, not onto its kind's preset.
    cfg = parse("backends:\n  cloud: {api_key: csk-1}\n  local: {kind: openai, base_url: 'http://gpu:8000/v1'}")
    assert list(cfg.backends) == ["local", "cloud"]
    local, cloud = cfg.backends["local"], cfg.backends["cloud"]
    assert (local.tier, local.kind, local.context_window, local.supports_prefill, local.model) == (
        "local", "openai", 65536, True, "local")
    assert cloud == attrs.evolve(config.CLOUD_DEFAULT, api_key="csk-1")
    assert parse("backends: {}") == parse("")
    # check-config prints the new form: every entry with its tier and order.
    dumped = yaml.safe_load(config.dump_yaml(cfg))["backends"]
    assert (dumped["local"]["tier"], dumped["cloud"]["tier"], dumped["cloud"]["order"]) == ("local", "cloud", 0)
    assert parse(config.dump_yaml(cfg).replace("api_key: '***'", "api_key: csk-1")) == cfg


def test_pools_are_named_entries_merged_onto_their_kinds_preset() -> None:
    cfg = parse("""
backends:
  spark-1: {kind: llamacpp, base_url: "http://10.0.0.11:8080/v1"}
  spark-2: {kind: llamacpp, base_url: "http://10.0.0.12:8080/v1", order: 1}
  zai: {kind: openai, base_url: "https://api.z.ai/api/paas/v4", model: glm-4.7, order: 1}
  cerebras: {kind: cerebras, api_key: csk-2}
  old-box: {kind: llamacpp, base_url: "http://10.0.0.13:8080/v1", enabled: false}
""")
    assert list(cfg.backends) == ["spark-1", "spark-2", "zai", "cerebras", "old-box"]
    assert cfg.tier("local") == ["spark-1", "spark-2"] and cfg.tier("cloud") == ["cerebras", "zai"]
    assert cfg.backends["spark-2"] == attrs.evolve(config.LOCAL_DEFAULT, base_url="http://10.0.0.12:8080/v1", order=1)
    assert cfg.backends["cerebras"] == attrs.evolve(config.CLOUD_DEFAULT, api_key="csk-2")
    assert (cfg.backends["zai"].tier, cfg.backends["zai"].price_input_per_mtok) == ("cloud", 0.0)
    ids = cfg.model_ids()
    assert ids["glm-4.7@spark-2"] == ("backend", "spark-2") and ids["glm-4.7-cloud"] == ("tier", "cloud")


def test_pool_entries_are_checked_by_path() -> None:
    assert "must be one of" in problems("backends: {c: {kind: cerebras, tier: edge}}")["backends.c.tier"]
    found = problems("backends:\n  Spark One: {kind: llamacpp}\n  zai: {kind: openai}")
    assert "becomes a metric label" in found["backends.Spark One"]
    assert found["backends.zai.base_url"] == "required (no default for kind openai)"
    assert found["backends.zai.model"] == "required (no default for kind openai)"
    assert problems("backends: []") == {"backends": "expected a mapping of names to sections, got list"}
    assert problems("backends: {a: {kind: llamacpp, enabled: false}}") == {
        "backends": "at least one backend must be enabled"}
    assert "neither a tier" in problems("routing: {judge: {enabled: true, backend: gpu}}")["routing.judge.backend"]
