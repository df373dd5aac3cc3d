"""Turn a YAML file into a validated :class:`~config.schema.GatewayConfig`.

Errors::

    Exception
    └── ConfigError      .problems = [(yaml path, message), ...], every problem at once

Pipeline: read file -> ``yaml.safe_load`` -> :func:`config.migrate.migrate` (older shapes into
today's) -> :func:`parse_config` (interpolate ``${VAR}``,
type-check, run each field's ``check``, merge into the defaults) -> ``cross_checks()``.
Problems are collected rather than raised one by one, so a user fixes the whole file in one go.

Interpolation, in string scalars only: ``${VAR}`` (an error if unset), ``${VAR:-default}``
(default when VAR is unset *or empty*, as in the shell), ``$$`` for a literal ``$``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
import typing
from collections.abc import Mapping
from typing import Any

import attrs
import yaml

from .migrate import migrate
from .schema import GatewayConfig

# `$$` must be tried first so `$${X}` stays a literal `${X}`; a bare `${` is unterminated.
_TOKEN = re.compile(r"\$\$|\$\{(?P<ref>[^}]*)\}|\$\{")
_REF = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.S)
_WHOLE_REF = re.compile(r"\$\{[^}]*\}")
# Header values are not `secret` fields, but an Authorization header is a secret all the same.
_SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|cookie|passw", re.I)

_EXPECTED = {str: "string", int: "integer", float: "number", bool: "boolean (true/false)"}


class ConfigError(Exception):
    """The config is unusable; ``problems`` lists every reason as (yaml path, message)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "<config>") -> None:
        super().__init__(problems, source)
        self.problems = list(problems)
        self.source = source

    def __str__(self) -> str:
        lines = [f"invalid config {self.source}:"]
        lines += [f"  {path}: {message}" for path, message in self.problems]
        return "\n".join(lines)


def load_config(path: str | os.PathLike | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the config at ``path``; ``None`` means all defaults.

    ``env`` defaults to a snapshot of ``os.environ`` taken now, so later changes to the
    process environment never change an already-loaded config.
    """
    env = dict(os.environ) if env is None else env
    if path is None:
        return parse_config(None, env)
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("<file>", f"cannot read: {exc}")], source) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([("<file>", _yaml_message(exc))], source) from exc
    return parse_config(data, env, source)


def parse_config(data: Any, env: Mapping[str, str], source: str = "<config>") -> GatewayConfig:
    """Validate already-parsed YAML ``data`` (``None`` = defaults) against the schema."""
    walker = _Walker(env)
    cfg = walker.section(GatewayConfig, migrate(data), "", GatewayConfig())
    # Cross-checks only make sense on an object built from well-typed fields.
    problems = walker.problems or cfg.cross_checks()
    if problems:
        raise ConfigError(problems, source)
    return cfg


def redacted(cfg: Any) -> dict[str, Any]:
    """The effective config as plain nested dicts, secrets shown only as set ("***") or not ("")."""
    out: dict[str, Any] = {}
    for fld in attrs.fields(type(cfg)):
        value = getattr(cfg, fld.name)
        if attrs.has(type(value)):
            out[fld.name] = redacted(value)
        elif fld.metadata.get("entries"):
            out[fld.name] = {name: redacted(entry) for name, entry in value.items()}
        elif fld.metadata.get("secret") and isinstance(value, tuple):
            out[fld.name] = ["***" if v else "" for v in value]
        elif fld.metadata.get("secret"):
            out[fld.name] = "***" if value else ""
        elif isinstance(value, dict):
            out[fld.name] = {k: "***" if v and _SENSITIVE_HEADER.search(k) else v for k, v in value.items()}
        elif isinstance(value, tuple):
            out[fld.name] = list(value)
        else:
            out[fld.name] = value
    return out


def dump_yaml(cfg: GatewayConfig) -> str:
    """The effective config as YAML, safe to print or log (see :func:`redacted`)."""
    return yaml.safe_dump(redacted(cfg), sort_keys=False, allow_unicode=True)


def reference_rows() -> list[tuple[str, str, str]]:
    """(yaml path, default as YAML/JSON text, doc) for every leaf field, in schema order."""
    rows: list[tuple[str, str, str]] = []

    def walk(defaults: Any, plain: dict[str, Any], prefix: str) -> None:
        for fld in attrs.fields(type(defaults)):
            path = _join(prefix, fld.name)
            value = getattr(defaults, fld.name)
            if attrs.has(type(value)):
                walk(value, plain[fld.name], path)
            elif fld.metadata.get("entries"):
                for name, entry in value.items():
                    walk(entry, plain[fld.name][name], _join(path, name))
            else:
                rows.append((path, json.dumps(plain[fld.name]), fld.metadata.get("doc", "")))

    # Walking the default *instance* gives merged sections their real defaults
    # (backends.cloud is the Cerebras preset, not the bare BackendConfig defaults).
    defaults = GatewayConfig()
    walk(defaults, redacted(defaults), "")
    return rows


class _Walker:
    """One validation pass: walks the schema alongside the YAML, collecting problems.

    No schema field accepts null, so the methods below return None for "invalid, already reported".
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[tuple[str, str]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def section(self, cls: type, data: Any, path: str, base: Any) -> Any:
        """Build ``cls`` from ``data``; keys it leaves out keep ``base``'s values (the merge)."""
        if data is None:
            return base
        if not isinstance(data, Mapping):
            self.problem(path or "<root>", f"expected a mapping of keys, got {_describe(data)}")
            return base
        fields = attrs.fields_dict(cls)
        for key in data:
            if key not in fields:
                self.problem(_join(path, str(key)), _unknown_key(str(key), list(fields)))
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name, fld in fields.items():
            current, sub = getattr(base, name), _join(path, name)
            if attrs.has(hints[name]):
                values[name] = self.section(hints[name], data.get(name), sub, current)
                continue
            if fld.metadata.get("entries"):
                given = data.get(name)
                values[name] = dict(current) if given is None else self.entries(fld.metadata["entries"], given, sub,
                                                                                  current)
                continue
            value = self.leaf(hints[name], data[name], sub, fld) if name in data else None
            if value is None:
                # Missing or invalid: keep the base value (copied: a dict default must not be
                # shared) so the walk can finish; an invalid object never reaches the caller.
                value = dict(current) if isinstance(current, dict) else current
            values[name] = value
        return cls(**values)

    def entries(self, spec: tuple[type, Any], data: Any, path: str, current: dict[str, Any]) -> dict[str, Any]:
        """A mapping of named sections; each entry is merged onto ``base_of(entry)``. The YAML's
        mapping replaces the default one (it lists every entry there is)."""
        cls, base_of = spec
        if not isinstance(data, Mapping):
            self.problem(path, f"expected a mapping of names to sections, got {_describe(data)}")
            return dict(current)
        out: dict[str, Any] = {}
        for key, entry in data.items():
            if not isinstance(key, str):
                self.problem(path, f"expected string names, got {_describe(key)}")
                continue
            out[key] = self.section(cls, entry if entry is not None else {}, _join(path, key), base_of(entry))
        return out

    def leaf(self, tp: type, raw: Any, path: str, fld: attrs.Attribute) -> Any:
        if tp is dict:
            value = self.string_map(raw, path)
        elif tp is tuple:
            value = self.string_list(raw, path)
        elif tp in _EXPECTED:
            value = self.scalar(tp, raw, path, secret=bool(fld.metadata.get("secret")))
        else:
            raise TypeError(f"config loader does not support field type {tp!r} ({path})")
        message = None
        if value is not None and tp is float and not math.isfinite(value):
            message = f"must be a finite number (got {value!r})"
        elif value is not None and fld.metadata.get("check"):
            message = fld.metadata["check"](value)
        if message:
            self.problem(path, message)
            return None
        return value

    def scalar(self, tp: type, raw: Any, path: str, secret: bool) -> Any:
        origin = ""
        if isinstance(raw, str):
            text = self.interpolate(raw, path)
            if text is None or tp is str:
                return text
            # Only a value that came from the environment is coerced from text: a literal
            # `port: "8000"` in YAML is a mistake worth reporting, `port: ${PORT}` is not.
            if _WHOLE_REF.fullmatch(raw):
                value = _from_text(tp, text)
                if value is not None:
                    return value
                origin = f" (from {raw})"
            raw = text
        # bool subclasses int, but `port: true` is a mistake; ints are fine for float fields.
        accepted = (int, float) if tp is float else tp
        if isinstance(raw, bool) != (tp is bool) or not isinstance(raw, accepted):
            self.problem(path, f"expected {_EXPECTED[tp]}, got {_describe(raw, secret)}{origin}")
            return None
        if tp is float and not isinstance(raw, float):
            # Widen the int; one too big for a float becomes inf, which leaf() reports.
            return float(raw) if abs(raw) <= sys.float_info.max else math.inf
        return raw

    def string_map(self, raw: Any, path: str) -> dict[str, str] | None:
        if not isinstance(raw, Mapping):
            self.problem(path, f"expected a mapping of strings, got {_describe(raw)}")
            return None
        out: dict[str, str] = {}
        for key, value in raw.items():
            sub = _join(path, str(key))
            if not isinstance(key, str) or not isinstance(value, str):
                bad, shown = ("key", key) if not isinstance(key, str) else ("value", value)
                secret = bool(_SENSITIVE_HEADER.search(str(key)))
                self.problem(sub, f"expected string {bad}, got {_describe(shown, secret)}")
                continue
            text = self.interpolate(value, sub)
            if text is not None:
                out[key] = text
        return out if len(out) == len(raw) else None

    def string_list(self, raw: Any, path: str) -> tuple[str, ...] | None:
        if not isinstance(raw, list):
            self.problem(path, f"expected a list of strings, got {_describe(raw)}")
            return None
        out: list[str] = []
        for i, item in enumerate(raw):
            sub = f"{path}[{i}]"
            if not isinstance(item, str):
                self.problem(sub, f"expected a string, got {_describe(item)}")
                continue
            text = self.interpolate(item, sub)
            if text is not None:
                out.append(text)
        return tuple(out) if len(out) == len(raw) else None

    def interpolate(self, text: str, path: str) -> str | None:
        """``text`` with ``${...}`` and ``$$`` expanded, or None after reporting a problem."""
        reported = len(self.problems)

        def expand(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            ref = match.group("ref")
            parsed = _REF.fullmatch(ref) if ref is not None else None
            if parsed is None:
                shown = "unterminated '${'" if ref is None else f"bad reference '${{{ref}}}'"
                self.problem(path, f"{shown}: use ${{NAME}} or ${{NAME:-default}}, or $$ for a literal $")
                return ""
            name, default = parsed.group("name", "default")
            value = self.env.get(name)
            if default is not None and not value:
                return default
            if value is None:
                self.problem(path, f"environment variable {name} is not set")
                return ""
            return value

        expanded = _TOKEN.sub(expand, text)
        return expanded if len(self.problems) == reported else None


def _from_text(tp: type, text: str) -> Any:
    """Coerce interpolated text to ``tp``, strictly (no YAML-1.1 'yes'/'on' guessing), or None."""
    text = text.strip()
    if tp is bool and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if tp is int and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if tp is float:
        try:
            return float(text)
        except ValueError:
            pass
    return None


def _describe(value: Any, secret: bool = False) -> str:
    """'string 'abc'' style text for error messages; never shows a secret's value."""
    if value is None or isinstance(value, (Mapping, list)):
        return "null" if value is None else "list" if isinstance(value, list) else "mapping"
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    kind = kinds.get(type(value), type(value).__name__)
    if secret:
        return f"{kind} (value hidden)"
    shown = json.dumps(value) if isinstance(value, bool) else repr(value)
    return f"{kind} {shown[:60] + '...' if len(shown) > 60 else shown}"


def _unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(known)}"
    return f"unknown key ({hint})"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if not isinstance(exc, yaml.MarkedYAMLError) or mark is None:
        return "invalid YAML: " + " ".join(str(exc).split())  # e.g. a control character
    context = f" ({exc.context})" if exc.context else ""
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"
