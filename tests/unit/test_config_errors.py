"""Bad router.toml snippets → the exact errors reported (table, key, line, message).

Each case lists every error it must produce, and no more: a follow-on error (an "unknown name"
for a model whose own table was wrong) is a bug too.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

from asgi_router.config import loads
from asgi_router.errors import ConfigError, ConfigErrors

FAKE_SECRET = "sk-FAKE-literal-0123456789abcdef"
ENV = {"K1": "fake-env-value-k1", "EMPTY": ""}

# A valid provider and model, appended after each snippet (so the snippet's lines are 1, 2, …).
BASE = """
[providers.p]
api = "openai"
base_url = "http://127.0.0.1:9000/v1"
api_keys = ["env:K1"]

[models.m]
provider = "p"
model = "m-1"
"""


class E(NamedTuple):
    table: str
    key: str
    line: int | None
    text: str  # a substring of the message


class Case(NamedTuple):
    id: str
    toml: str
    errors: list[E]
    base: bool = True


def P(name: str, extra: str = "") -> str:
    """A valid provider table (5 lines with the header) plus ``extra`` lines."""
    body = f'[providers.{name}]\napi = "openai"\nbase_url = "http://x.test/v1"\napi_keys = []\n'
    return body + textwrap.dedent(extra)


CASES = [
    # --- syntax and top level
    Case("toml-syntax", "[models.x\n", [E("", "", 1, "invalid TOML")]),
    Case("toml-duplicate-key", "a = 1\nb = 2\na = 3\n", [E("", "", 3, "invalid TOML")], base=False),
    Case("unknown-top-level", "foo = 1\n", [E("", "foo", 1, "unknown table 'foo'")]),
    Case("top-level-suggestion", "[model.x]\n", [E("", "model", 1, "did you mean 'models'?")]),
    Case(
        "empty-file",
        "",
        [E("providers", "", None, "[providers.NAME]"), E("models", "", None, "[models.NAME]")],
        base=False,
    ),
    Case(
        "providers-not-a-table",
        'providers = 3\n[models.m]\nprovider = "p"\nmodel = "x"\n',
        [E("", "providers", 1, "must be a table of [providers.NAME] tables")],
        base=False,
    ),
    Case("entry-not-a-table", "[providers]\nq = 1\n", [E("providers", "q", 2, "must be a table")]),
    Case("server-not-a-table", "server = 1\n", [E("", "server", 1, "must be a table ([server])")]),
    # --- provider keys and types
    Case(
        "unknown-key-suggestion",
        P("q", "timeout = 5\n"),
        [E("providers.q", "timeout", 5, "unknown key 'timeout' (did you mean 'timeout_s'?)")],
    ),
    Case("int-not-bool", P("q", "retries = true\n"), [E("providers.q", "retries", 5, "must be an integer")]),
    Case("int-not-float", P("q", "retries = 1.5\n"), [E("providers.q", "retries", 5, "got a float")]),
    Case("int-minimum", P("q", "retries = -1\n"), [E("providers.q", "retries", 5, "≥ 0")]),
    Case("float-positive", P("q", "timeout_s = 0\n"), [E("providers.q", "timeout_s", 5, "> 0")]),
    Case("float-finite", P("q", "timeout_s = nan\n"), [E("providers.q", "timeout_s", 5, "finite")]),
    Case("float-not-string", P("q", 'timeout_s = "5"\n'), [E("providers.q", "timeout_s", 5, "a string")]),
    Case(
        "list-not-string",
        P("q", 'drop_params = "logprobs"\n'),
        [E("providers.q", "drop_params", 5, "must be a list of strings")],
    ),
    Case(
        "list-entry-type",
        P("q", 'drop_params = ["a", 1]\n'),
        [E("providers.q", "drop_params", 5, "entry 2 must be a string")],
    ),
    Case(
        "headers-values",
        P("q", "headers = { X-Team = 1 }\n"),
        [E("providers.q", "headers", 5, "must be a table of strings")],
    ),
    Case(
        "headers-credentials",
        P("q", 'headers = { Authorization = "env:K1" }\n'),
        [E("providers.q", "headers.Authorization", 5, "credentials go in api_keys")],
    ),
    Case(
        "no-preset-no-api",
        '[providers.q]\napi_keys = []\n[models.n]\nprovider = "q"\nmodel = "x"\n',
        [E("providers.q", "", 1, "needs a known `preset`, or both `api` and `base_url`")],
    ),
    Case(
        "api-without-base-url",
        '[providers.q]\napi = "openai"\napi_keys = []\n',
        [E("providers.q", "", 1, "(base_url missing)")],
    ),
    Case(
        "unknown-preset",
        '[providers.q]\npreset = "mistrall"\napi_keys = []\n',
        [E("providers.q", "preset", 2, "unknown preset 'mistrall'")],
    ),
    Case(
        "bad-api",
        P("q", 'api = "grpc"\n').replace('api = "openai"\n', ""),
        [E("providers.q", "api", 4, 'must be "openai" or "anthropic"')],
    ),
    Case(
        "bad-base-url",
        '[providers.q]\napi = "openai"\nbase_url = "ftp://x"\napi_keys = []\n',
        [E("providers.q", "base_url", 3, "must start with http://")],
    ),
    Case(
        "api-keys-required",
        '[providers.q]\npreset = "groq"\n',
        [E("providers.q", "api_keys", 1, '"env:GROQ_API_KEY"')],
    ),
    Case(
        "api-keys-twice",
        '[providers.q]\npreset = "groq"\napi_keys = ["env:K1", "env:K1"]\n',
        [E("providers.q", "api_keys", 3, "env:K1 is listed twice")],
    ),
    # --- secrets
    Case(
        "literal-api-key",
        f'[providers.q]\npreset = "openai"\napi_keys = ["{FAKE_SECRET}"]\n',
        [E("providers.q", "api_keys", 3, "secrets must be references: env:NAME or file:PATH")],
    ),
    Case(
        "literal-admin-key",
        f'[server]\nadmin_key = "{FAKE_SECRET}"\n',
        [E("server", "admin_key", 2, "secrets must be references")],
    ),
    Case(
        "literal-client-key",
        f'[keys.a]\nkey = "{FAKE_SECRET}"\n',
        [E("keys.a", "key", 2, "secrets must be references")],
    ),
    Case(
        "missing-env",
        '[providers.q]\npreset = "openai"\napi_keys = ["env:NOPE_KEY"]\n[models.n]\nprovider = "q"\n'
        'model = "x"\n[fallbacks.f]\nchain = ["n"]\n',
        [E("providers.q", "api_keys", 3, "environment variable NOPE_KEY is not set (env:NOPE_KEY)")],
    ),
    Case(
        "empty-env",
        '[server]\nadmin_key = "env:EMPTY"\n',
        [E("server", "admin_key", 2, "env:EMPTY is empty")],
    ),
    Case(
        "env-without-name",
        '[server]\nadmin_key = "env:"\n',
        [E("server", "admin_key", 2, "names no variable")],
    ),
    Case(
        "missing-file",
        '[server]\nadmin_key = "file:no-such-secret.txt"\n',
        [E("server", "admin_key", 2, "cannot read file:no-such-secret.txt")],
    ),
    # --- models
    Case(
        "model-required-keys",
        "[models.n]\ncontext_window = 10\n",
        [
            E("models.n", "provider", 1, "'provider' is required"),
            E("models.n", "model", 1, "'model' is required"),
        ],
    ),
    Case(
        "unknown-provider",
        '[models.n]\nprovider = "nope"\nmodel = "x"\n[fallbacks.f]\nchain = ["n", "m"]\n',
        [E("models.n", "provider", 2, "unknown provider 'nope' (known: p)")],
    ),
    Case(
        "price-not-table",
        '[models.n]\nprovider = "p"\nmodel = "x"\nprice = 0.5\n',
        [E("models.n", "price", 4, "must be a table like")],
    ),
    Case(
        "price-missing-output",
        '[models.n]\nprovider = "p"\nmodel = "x"\nprice = { input = 0.5 }\n',
        [E("models.n.price", "output", 4, "'output' is required")],
    ),
    Case(
        "price-unknown-key",
        '[models.n]\nprovider = "p"\nmodel = "x"\n\n[models.n.price]\ninput = 1\noutput = 2\ncache = 1\n',
        [E("models.n.price", "cache", 8, "did you mean 'cached_input'?")],
    ),
    Case(
        "price-negative",
        '[models.n]\nprovider = "p"\nmodel = "x"\nprice = { input = -1, output = 1 }\n',
        [E("models.n.price", "input", 4, "≥ 0")],
    ),
    Case(
        "params-reserved",
        '[models.n]\nprovider = "p"\nmodel = "x"\nparams = { model = "y", temperature = 0 }\n',
        [E("models.n", "params.model", 4, "params may not set 'model'")],
    ),
    Case(
        "output-over-context",
        '[models.n]\nprovider = "p"\nmodel = "x"\ncontext_window = 100\nmax_output_tokens = 200\n',
        [E("models.n", "max_output_tokens", 5, "must not exceed context_window")],
    ),
    # --- the shared namespace and references
    Case(
        "duplicate-name",
        '[fallbacks.m]\nchain = ["m"]\n',
        [E("fallbacks.m", "", 1, "already used by [models.m]")],
    ),
    Case(
        "duplicate-name-race",
        '[fallbacks.x]\nchain = ["m"]\n[races.x]\nmembers = ["m"]\n',
        [E("races.x", "", 3, "already used by [fallbacks.x]")],
    ),
    Case(
        "unknown-member",
        '[fallbacks.chat]\nchain = ["m", "nope"]\n',
        [E("fallbacks.chat", "chain", 2, "unknown name 'nope' (not a model, fallback or race)")],
    ),
    Case(
        "unknown-race-member",
        '[races.r]\nmembers = ["nope"]\n',
        [E("races.r", "members", 2, "unknown name 'nope'")],
    ),
    Case(
        "cycle",
        '[fallbacks.a]\nchain = ["m", "b"]\n[races.b]\nmembers = ["c"]\n[fallbacks.c]\nchain = ["a"]\n'
        '[fallbacks.top]\nchain = ["a"]\n',
        [E("fallbacks.a", "chain", 2, "cycle: a → b → c → a")],
    ),
    Case("self-cycle", '[fallbacks.a]\nchain = ["a"]\n', [E("fallbacks.a", "chain", 2, "cycle: a → a")]),
    Case("empty-chain", "[fallbacks.a]\nchain = []\n", [E("fallbacks.a", "chain", 2, "chain is empty")]),
    Case("empty-race", "[races.a]\nmembers = []\n", [E("races.a", "members", 2, "members is empty")]),
    Case(
        "missing-chain",
        '[fallbacks.a]\norder = "listed"\n[fallbacks.b]\nchain = ["a"]\n',
        [E("fallbacks.a", "chain", 1, "'chain' is required")],
    ),
    Case(
        "bad-order",
        '[fallbacks.a]\nchain = ["m"]\norder = "random"\n',
        [E("fallbacks.a", "order", 3, "must be one of listed, cheapest, fastest, weighted")],
    ),
    Case(
        "weights-need-weighted",
        '[fallbacks.a]\nchain = ["m"]\nweights = [1]\n',
        [E("fallbacks.a", "weights", 3, 'only apply with order = "weighted"')],
    ),
    Case(
        "weights-length",
        '[fallbacks.a]\nchain = ["m"]\norder = "weighted"\nweights = [1, 2]\n',
        [E("fallbacks.a", "weights", 4, "has 2 entries for 1 chain members")],
    ),
    Case(
        "weights-all-zero",
        '[fallbacks.a]\nchain = ["m"]\norder = "weighted"\nweights = [0]\n',
        [E("fallbacks.a", "weights", 4, "at least one weight must be > 0")],
    ),
    Case(
        "weights-negative",
        '[fallbacks.a]\nchain = ["m"]\norder = "weighted"\nweights = [-1]\n',
        [E("fallbacks.a", "weights", 4, "entry 1 must be a number ≥ 0")],
    ),
    Case(
        "retry-on-values",
        '[fallbacks.a]\nchain = ["m"]\nretry_on = [399, 429, "sometimes", 600, "timeout"]\n',
        [
            E("fallbacks.a", "retry_on", 3, "399 is not an HTTP status 400-599"),
            E("fallbacks.a", "retry_on", 3, "'sometimes' is not"),
            E("fallbacks.a", "retry_on", 3, "600 is not"),
        ],
    ),
    Case(
        "retry-on-type",
        '[fallbacks.a]\nchain = ["m"]\nretry_on = [true]\n',
        [E("fallbacks.a", "retry_on", 3, "entry 1 must be an integer or a string, got a boolean")],
    ),
    Case(
        "hedge-negative", '[races.r]\nmembers = ["m"]\nhedge_ms = -5\n', [E("races.r", "hedge_ms", 3, "≥ 0")]
    ),
    # --- client keys
    Case(
        "key-neither",
        "[keys.a]\nrpm = 5\n",
        [E("keys.a", "", 1, "needs exactly one of key_sha256 or key")],
    ),
    Case(
        "key-both",
        '[keys.a]\nkey = "env:K1"\nkey_sha256 = "' + "a" * 64 + '"\n',
        [E("keys.a", "", 1, "needs exactly one of key_sha256 or key")],
    ),
    Case(
        "key-bad-hash",
        '[keys.a]\nkey_sha256 = "9f86d0"\n',
        [E("keys.a", "key_sha256", 2, "must be 64 hex digits")],
    ),
    Case(
        "key-allow-unknown",
        '[keys.a]\nkey_sha256 = "' + "a" * 64 + '"\nallow = ["m", "nope"]\n',
        [E("keys.a", "allow", 3, "unknown name 'nope'")],
    ),
    Case(
        "key-budget-period",
        '[keys.a]\nkey_sha256 = "' + "a" * 64 + '"\nbudget_usd = 5\nbudget_period = "week"\n',
        [E("keys.a", "budget_period", 4, "must be one of day, month, total")],
    ),
    Case(
        "key-same-hash",
        '[keys.a]\nkey_sha256 = "' + "a" * 64 + '"\n[keys.b]\nkey_sha256 = "' + "A" * 64 + '"\n',
        [E("keys.b", "", 3, "is the same key as [keys.a]")],
    ),
    Case("key-rpm", '[keys.a]\nkey = "env:K1"\nrpm = 0\n', [E("keys.a", "rpm", 3, "≥ 1")]),
    # --- server and state
    Case(
        "open-access-not-loopback",
        '[server]\nlisten = "0.0.0.0:4000"\n',
        [E("server", "listen", 2, "listens only on loopback")],
    ),
    Case(
        "open-access-hostname",
        '[server]\nlisten = "example.com:4000"\n',
        [E("server", "listen", 2, "listens only on loopback")],
    ),
    Case("listen-no-port", '[server]\nlisten = "localhost"\n', [E("server", "listen", 2, "HOST:PORT")]),
    Case("listen-ipv6-brackets", '[server]\nlisten = "::1:4000"\n', [E("server", "listen", 2, "[::1]:4000")]),
    Case(
        "listen-port-range", '[server]\nlisten = "127.0.0.1:70000"\n', [E("server", "listen", 2, "HOST:PORT")]
    ),
    Case("server-unknown-key", "[server]\nport = 4000\n", [E("server", "port", 2, "unknown key 'port'")]),
    Case("watch-bool", '[server]\nwatch = "yes"\n', [E("server", "watch", 2, "must be true or false")]),
    Case("body-limit", "[server]\nmax_body_bytes = 0\n", [E("server", "max_body_bytes", 2, "≥ 1")]),
    Case(
        "state-backend",
        '[state]\nbackend = "postgres://db"\n',
        [E("state", "backend", 2, 'must be "memory" or a redis:// URL')],
    ),
    Case(
        "state-unknown-key",
        "[state]\nspendlog = 'x.db'\n",
        [E("state", "spendlog", 2, "did you mean 'spend_log'?")],
    ),
]


def _load(case: Case) -> list[ConfigError]:
    text = textwrap.dedent(case.toml) + (BASE if case.base else "")
    with pytest.raises(ConfigErrors) as info:
        loads(text, path=Path("/cfg/router.toml"), env=ENV)
    return info.value.errors


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_reports_exactly_these_errors(case: Case) -> None:
    errors = _load(case)
    listing = "\n".join(str(e) for e in errors)
    assert len(errors) == len(case.errors), listing
    for want in case.errors:
        assert any(
            e.table == want.table and e.key == want.key and want.text in e.message and e.line == want.line
            for e in errors
        ), f"missing {want}\ngot:\n{listing}"
    assert all(e.file == "/cfg/router.toml" for e in errors)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [c for c in CASES if FAKE_SECRET in c.toml], ids=lambda c: c.id)
def test_literal_secrets_are_never_echoed(case: Case) -> None:
    errors = _load(case)
    assert FAKE_SECRET not in "\n".join(str(e) for e in errors)
    assert FAKE_SECRET not in str(ConfigErrors(errors))
    assert all(FAKE_SECRET not in repr(e) for e in errors)


def test_env_values_are_never_echoed() -> None:
    """A resolved secret stays out of errors even when its table has other problems."""
    text = '[keys.a]\nkey = "env:K1"\nallow = ["nope"]\n' + BASE
    with pytest.raises(ConfigErrors) as info:
        loads(text, path=Path("r.toml"), env=ENV)
    assert ENV["K1"] not in str(info.value)


def test_many_errors_in_one_file_are_all_reported_in_file_order() -> None:
    fixture = Path(__file__).parent.parent / "fixtures" / "config" / "many_errors.toml"
    expected = fixture.with_suffix(".expected").read_text().splitlines()
    with pytest.raises(ConfigErrors) as info:
        loads(fixture.read_text(), path=Path("many_errors.toml"), env={"SET_KEY": "v"})
    got = [str(e) for e in info.value.errors]
    assert got == expected
    lines = [e.line for e in info.value.errors if e.line is not None]
    assert lines == sorted(lines)
    assert str(info.value) == "\n".join(expected)


def test_unreadable_file_is_one_error(tmp_path: Path) -> None:
    from asgi_router.config import load

    with pytest.raises(ConfigErrors) as info:
        load(tmp_path / "missing.toml", env={})
    [error] = info.value.errors
    assert "cannot read the file" in error.message
    assert error.file.endswith("missing.toml")


def test_not_utf8_is_one_error(tmp_path: Path) -> None:
    from asgi_router.config import load

    path = tmp_path / "router.toml"
    path.write_bytes(b"a = '\xff'\n")
    with pytest.raises(ConfigErrors) as info:
        load(path, env={})
    assert [e.message for e in info.value.errors] == ["the file is not valid UTF-8"]
