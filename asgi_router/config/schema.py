"""The parsed document → frozen ``*Spec`` values: known keys only, right types, nothing resolved.

This is the first of two phases (after tensorzero's config): here every table is checked for
unknown keys and value types, and every problem is recorded, never just the first. Meaning
(references, names, enumerations, cross-field rules) is ``compile.py``'s job. A field left out
of the file, or written with the wrong type, is ``None`` in its spec, so the later phase can
still check everything else in that table without reporting follow-on errors.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from types import MappingProxyType
from typing import Any, Final, Literal

from asgi_router.config.source import Problems, Where

EMPTY_MAP: Mapping[str, Any] = MappingProxyType({})

FieldKind = Literal[
    "str", "int", "float", "bool", "str_list", "num_list", "retry_list", "str_map", "table", "price"
]


@dataclass(frozen=True, slots=True)
class Field:
    kind: FieldKind
    lo: float | None = None
    """The smallest allowed number (each entry, for lists)."""
    above: bool = False
    """True: the number must be greater than ``lo``, not equal."""
    required: bool = False


@dataclass(frozen=True, slots=True)
class PriceSpec:
    input: float
    output: float
    cached_input: float | None = None


@dataclass(frozen=True, slots=True)
class ServerSpec:
    listen: str | None = None
    admin_key: str | None = None
    max_body_bytes: int | None = None
    watch: bool | None = None


@dataclass(frozen=True, slots=True)
class StateSpec:
    backend: str | None = None
    spend_log: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    preset: str | None = None
    api: str | None = None
    base_url: str | None = None
    api_keys: tuple[str, ...] | None = None
    timeout_s: float | None = None
    connect_timeout_s: float | None = None
    first_token_timeout_s: float | None = None
    stream_idle_timeout_s: float | None = None
    retries: int | None = None
    circuit_failures: int | None = None
    circuit_open_s: float | None = None
    drop_params: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: EMPTY_MAP)
    max_concurrency: int | None = None
    anthropic_version: str | None = None
    default_max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    provider: str | None = None
    model: str | None = None
    price: PriceSpec | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAP)


@dataclass(frozen=True, slots=True)
class FallbackSpec:
    name: str
    chain: tuple[str, ...] | None = None
    order: str | None = None
    weights: tuple[float, ...] | None = None
    retry_on: tuple[int | str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RaceSpec:
    name: str
    members: tuple[str, ...] | None = None
    hedge_ms: float | None = None


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str
    key_sha256: str | None = None
    key: str | None = None
    allow: tuple[str, ...] | None = None
    rpm: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigSpec:
    server: ServerSpec = ServerSpec()
    state: StateSpec = StateSpec()
    providers: tuple[ProviderSpec, ...] = ()
    models: tuple[ModelSpec, ...] = ()
    fallbacks: tuple[FallbackSpec, ...] = ()
    races: tuple[RaceSpec, ...] = ()
    keys: tuple[KeySpec, ...] = ()
    broken: frozenset[tuple[str, str]] = frozenset()
    """(section, name) of entries that were not tables: they exist, so references to them are
    not reported again as unknown."""


_POS = Field("float", 0, above=True)
_NONNEG = Field("float", 0)
_POS_INT = Field("int", 1)

SERVER_FIELDS: Final[Mapping[str, Field]] = {
    "listen": Field("str"),
    "admin_key": Field("str"),
    "max_body_bytes": _POS_INT,
    "watch": Field("bool"),
}
STATE_FIELDS: Final[Mapping[str, Field]] = {"backend": Field("str"), "spend_log": Field("str")}
PROVIDER_FIELDS: Final[Mapping[str, Field]] = {
    "preset": Field("str"),
    "api": Field("str"),
    "base_url": Field("str"),
    "api_keys": Field("str_list"),
    "timeout_s": _POS,
    "connect_timeout_s": _POS,
    "first_token_timeout_s": _POS,
    "stream_idle_timeout_s": _POS,
    "retries": Field("int", 0),
    "circuit_failures": _POS_INT,
    "circuit_open_s": _POS,
    "drop_params": Field("str_list"),
    "headers": Field("str_map"),
    "max_concurrency": _POS_INT,
    "anthropic_version": Field("str"),
    "default_max_tokens": _POS_INT,
}
MODEL_FIELDS: Final[Mapping[str, Field]] = {
    "provider": Field("str", required=True),
    "model": Field("str", required=True),
    "price": Field("price"),
    "context_window": _POS_INT,
    "max_output_tokens": _POS_INT,
    "rpm": _POS_INT,
    "tpm": _POS_INT,
    "params": Field("table"),
}
PRICE_FIELDS: Final[Mapping[str, Field]] = {
    "input": Field("float", 0, required=True),
    "output": Field("float", 0, required=True),
    "cached_input": _NONNEG,
}
FALLBACK_FIELDS: Final[Mapping[str, Field]] = {
    "chain": Field("str_list", required=True),
    "order": Field("str"),
    "weights": Field("num_list", 0),
    "retry_on": Field("retry_list"),
}
RACE_FIELDS: Final[Mapping[str, Field]] = {
    "members": Field("str_list", required=True),
    "hedge_ms": _NONNEG,
}
KEY_FIELDS: Final[Mapping[str, Field]] = {
    "key_sha256": Field("str"),
    "key": Field("str"),
    "allow": Field("str_list"),
    "rpm": _POS_INT,
    "budget_usd": _NONNEG,
    "budget_period": Field("str"),
}
TOP_LEVEL: Final = ("server", "providers", "models", "fallbacks", "races", "keys", "state")

_BAD: Final = object()
"""The marker for a value that failed its check (``None`` is never a TOML value, but be plain)."""


def build(doc: Mapping[str, Any], problems: Problems) -> ConfigSpec:
    """Check the whole document; every problem goes to ``problems``; the spec keeps what is valid."""
    for key in doc:
        if key not in TOP_LEVEL:
            problems.add((), key, f"unknown table {key!r}{_suggest(key, TOP_LEVEL)}")
    broken: set[tuple[str, str]] = set()
    spec = ConfigSpec(
        server=ServerSpec(**_single(doc, "server", SERVER_FIELDS, problems)),
        state=StateSpec(**_single(doc, "state", STATE_FIELDS, problems)),
        providers=tuple(
            ProviderSpec(name=n, **v) for n, v in _named(doc, "providers", PROVIDER_FIELDS, problems, broken)
        ),
        models=tuple(
            ModelSpec(name=n, **v) for n, v in _named(doc, "models", MODEL_FIELDS, problems, broken)
        ),
        fallbacks=tuple(
            FallbackSpec(name=n, **v) for n, v in _named(doc, "fallbacks", FALLBACK_FIELDS, problems, broken)
        ),
        races=tuple(RaceSpec(name=n, **v) for n, v in _named(doc, "races", RACE_FIELDS, problems, broken)),
        keys=tuple(KeySpec(name=n, **v) for n, v in _named(doc, "keys", KEY_FIELDS, problems, broken)),
        broken=frozenset(broken),
    )
    if not spec.providers and ("providers", "") not in broken:
        problems.add(("providers",), "", "at least one [providers.NAME] table is required")
    if not spec.models and not any(section == "models" for section, _ in broken):
        problems.add(("models",), "", "at least one [models.NAME] table is required")
    return spec


def _single(
    doc: Mapping[str, Any], section: str, fields: Mapping[str, Field], problems: Problems
) -> dict[str, Any]:
    raw = doc.get(section)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add((), section, f"must be a table ([{section}]), got {_type_name(raw)}")
        return {}
    return check_table(raw, (section,), fields, problems)


def _named(
    doc: Mapping[str, Any],
    section: str,
    fields: Mapping[str, Field],
    problems: Problems,
    broken: set[tuple[str, str]],
) -> list[tuple[str, dict[str, Any]]]:
    """The ``[section.NAME]`` tables as (name, checked fields)."""
    raw = doc.get(section)
    if raw is None:
        return []
    if not isinstance(raw, dict):
        problems.add((), section, f"must be a table of [{section}.NAME] tables, got {_type_name(raw)}")
        broken.add((section, ""))
        return []
    out: list[tuple[str, dict[str, Any]]] = []
    for name, body in raw.items():
        if not isinstance(body, dict):
            problems.add((section,), name, f"must be a table ([{section}.{name}]), got {_type_name(body)}")
            broken.add((section, name))
            continue
        if not name.strip():
            problems.add((section,), name, "a name must not be empty")
        out.append((name, check_table(body, (section, name), fields, problems)))
    return out


def check_table(
    raw: Mapping[str, Any], table: Where, fields: Mapping[str, Field], problems: Problems
) -> dict[str, Any]:
    """The known, well-typed fields of one table; unknown keys and bad values are recorded."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        field = fields.get(key)
        if field is None:
            problems.add(table, key, f"unknown key {key!r}{_suggest(key, fields)}")
            continue
        converted = _convert(field, value, table, key, problems)
        if converted is not _BAD:
            out[key] = converted
    for key, field in fields.items():
        if field.required and key not in raw:
            problems.add(table, key, f"{key!r} is required")
    return out


def _convert(field: Field, value: Any, table: Where, key: str, problems: Problems) -> Any:
    kind = field.kind
    if kind == "price":
        return _price(value, table, key, problems)
    if kind in ("str_list", "num_list", "retry_list"):
        return _list(field, value, table, key, problems)
    if kind in ("str_map", "table"):
        if not isinstance(value, dict):
            problems.add(table, key, f"must be a table, got {_type_name(value)}")
            return _BAD
        if kind == "str_map" and not all(isinstance(v, str) for v in value.values()):
            problems.add(table, key, "must be a table of strings")
            return _BAD
        return MappingProxyType(dict(value))
    error = _scalar_error(field, value)
    if error:
        problems.add(table, key, error)
        return _BAD
    return float(value) if kind == "float" else value


def _scalar_error(field: Field, value: Any) -> str | None:
    """Why ``value`` does not fit a scalar field, or None when it does."""
    kind = field.kind
    if kind == "str":
        if not isinstance(value, str):
            return f"must be a string, got {_type_name(value)}"
        return "must not be empty" if not value.strip() else None
    if kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false, got {_type_name(value)}"
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"must be an integer, got {_type_name(value)}"
    if isinstance(value, int) and abs(value) > MAX_INT:
        return f"is too large (at most {MAX_INT:,})"
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {_type_name(value)}"
        if not math.isfinite(value):
            return "must be a finite number"
    return _range_error(field, value)


MAX_INT = 2**53  # beyond this an integer is no longer exact in JSON, metrics or arithmetic


def _range_error(field: Field, value: float) -> str | None:
    if field.lo is None:
        return None
    noun = "an integer" if field.kind == "int" else "a number"
    if field.above and value <= field.lo:
        return f"must be {noun} > {field.lo:g}"
    if value < field.lo:
        return f"must be {noun} ≥ {field.lo:g}"
    return None


def _list(field: Field, value: Any, table: Where, key: str, problems: Problems) -> Any:
    what = {
        "str_list": "a list of strings",
        "num_list": "a list of numbers",
        "retry_list": 'a list of HTTP statuses and "timeout", "connect" or "context_length"',
    }[field.kind]
    if not isinstance(value, list):
        problems.add(table, key, f"must be {what}, got {_type_name(value)}")
        return _BAD
    bad = False
    for index, item in enumerate(value):
        if field.kind == "str_list":
            error = _scalar_error(Field("str"), item)
        elif field.kind == "num_list":
            error = _scalar_error(Field("float", field.lo, field.above), item)
        else:
            ok = isinstance(item, str) or (isinstance(item, int) and not isinstance(item, bool))
            error = None if ok else f"must be an integer or a string, got {_type_name(item)}"
        if error:
            problems.add(table, key, f"entry {index + 1} {error}")
            bad = True
    if bad:
        return _BAD
    return tuple(float(v) for v in value) if field.kind == "num_list" else tuple(value)


def _price(value: Any, table: Where, key: str, problems: Problems) -> Any:
    if not isinstance(value, dict):
        problems.add(
            table,
            key,
            f"must be a table like {{ input = 0.15, output = 0.60 }} (USD per million tokens), "
            f"got {_type_name(value)}",
        )
        return _BAD
    before = len(problems)
    fields = check_table(value, (*table, key), PRICE_FIELDS, problems)
    if len(problems) != before:
        return _BAD
    return PriceSpec(**fields)


def _suggest(key: str, known: Mapping[str, Any] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1) or [
        k for k in known if len(key) >= 3 and k.startswith(key)
    ]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date/time"
    return type(value).__name__
