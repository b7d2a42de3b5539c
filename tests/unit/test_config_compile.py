"""Good router.toml files → the expected compiled graph: nesting, presets, values, fingerprints."""

from __future__ import annotations

import dataclasses
import hashlib
import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

from asgi_router.config import PRESETS, load, loads
from asgi_router.config import schema as schema_mod
from asgi_router.graph import (
    DEFAULT_RETRY_ON,
    Deployment,
    Fallback,
    Graph,
    Quirks,
    Race,
    ServerSettings,
    leaves,
)

ENV = {"MISTRAL_API_KEY": "mk-1", "GROQ_API_KEY": "gk-1", "TEAM_KEY": "team-secret", "ADMIN": "adm"}
PATH = Path("/etc/router/router.toml")

NESTED = """
[providers.mistral]
preset = "mistral"
api_keys = ["env:MISTRAL_API_KEY"]

[providers.groq]
preset = "groq"
api_keys = ["env:GROQ_API_KEY"]

[models.small]
provider = "mistral"
model = "mistral-small-latest"
price = { input = 0.1, output = 0.3 }

[models.llama]
provider = "groq"
model = "llama-3.3-70b-versatile"
price = { input = 0.59, output = 0.79, cached_input = 0.3 }

[models.large]
provider = "mistral"
model = "mistral-large-latest"

[fallbacks.chat]
chain = ["small", "fast"]

[races.fast]
members = ["llama", "backup"]
hedge_ms = 250

[fallbacks.backup]
chain = ["large", "small"]
order = "cheapest"
retry_on = [429, "timeout"]
"""


def compile_text(text: str, env: dict[str, str] | None = None, **kw: int) -> Graph:
    return loads(textwrap.dedent(text), path=PATH, env=ENV if env is None else env, **kw)


def test_nested_chain_race_chain() -> None:
    g = compile_text(NESTED)
    chat, fast, backup = g.nodes["chat"], g.nodes["fast"], g.nodes["backup"]
    assert isinstance(chat, Fallback) and isinstance(fast, Race) and isinstance(backup, Fallback)
    assert [m.name for m in chat.members] == ["small", "fast"]
    assert chat.members[1] is fast and fast.members[1] is backup
    assert backup.members[1] is g.nodes["small"]
    assert [d.name for d in leaves(chat)] == ["small", "llama", "large", "small"]
    assert fast.hedge_s == pytest.approx(0.25)
    assert chat.order == "listed" and chat.weights is None and chat.retry_on == DEFAULT_RETRY_ON
    assert backup.order == "cheapest" and backup.retry_on == frozenset({429, "timeout"})
    assert list(g.nodes) == ["small", "llama", "large", "chat", "backup", "fast"]
    assert g.resolve("nope") is None and g.resolve("fast") is fast
    assert {d.name for d in g.deployments} == {"small", "llama", "large"}
    assert g.races == (fast,)
    assert isinstance(g.nodes, MappingProxyType) and isinstance(g.providers, MappingProxyType)


def test_deployment_fields() -> None:
    g = compile_text(
        NESTED.replace(
            'model = "mistral-large-latest"\n',
            'model = "mistral-large-latest"\ncontext_window = 128000\nmax_output_tokens = 4096\n'
            'rpm = 10\ntpm = 20000\nparams = { temperature = 0.3, stop = ["x"] }\n',
        )
    )
    large = g.nodes["large"]
    assert isinstance(large, Deployment)
    assert large.provider is g.providers["mistral"]
    assert (large.model, large.context_window, large.max_output_tokens, large.rpm, large.tpm) == (
        "mistral-large-latest",
        128000,
        4096,
        10,
        20000,
    )
    assert dict(large.params) == {"temperature": 0.3, "stop": ["x"]}
    assert large.price is None
    llama = g.nodes["llama"]
    assert isinstance(llama, Deployment) and llama.price is not None
    assert (llama.price.input, llama.price.output, llama.price.cached_input) == (0.59, 0.79, 0.3)
    assert isinstance(llama.price.input, float)


def test_every_graph_value_is_frozen() -> None:
    g = compile_text(NESTED)
    for value in (g, g.server, g.state, *g.providers.values(), *g.nodes.values()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, None)


def test_defaults_without_server_state_or_keys() -> None:
    g = compile_text(NESTED)
    assert g.server == ServerSettings()
    assert g.state.backend == "memory" and g.state.spend_log is None
    assert g.open_access and not g.keys and not g.keys_by_hash
    assert g.source == PATH and g.generation == 0


def test_generation_is_passed_through() -> None:
    assert compile_text(NESTED, generation=7).generation == 7


# --- presets -----------------------------------------------------------------------------


def _provider_graph(body: str, env: dict[str, str] | None = None) -> Graph:
    text = f'[providers.x]\n{textwrap.dedent(body)}\n[models.m]\nprovider = "x"\nmodel = "m"\n'
    return compile_text(text, env)


def test_preset_fills_api_base_url_and_quirks() -> None:
    p = _provider_graph('preset = "mistral"\napi_keys = ["env:MISTRAL_API_KEY"]\n').providers["x"]
    assert (p.api, p.base_url, p.preset) == ("openai", "https://api.mistral.ai/v1", "mistral")
    q = p.quirks
    assert {"user", "logprobs", "stream_options", "store", "logit_bias"} <= q.drop_params
    assert dict(q.rename_params) == {
        "seed": "random_seed",
        "max_completion_tokens": "max_tokens",
        "dimensions": "output_dimension",  # embeddings
    }
    assert q.stream_usage == "always" and q.developer_role is False and q.tool_call_ids == "alnum9"
    assert q.fix_message_order is True
    assert [s.ref for s in p.api_keys] == ["env:MISTRAL_API_KEY"]
    assert p.api_keys[0].reveal() == "mk-1"


def test_user_fields_override_the_preset_and_drop_params_add() -> None:
    p = _provider_graph(
        """
        preset = "groq"
        api_keys = ["env:GROQ_API_KEY"]
        base_url = "https://proxy.example/groq/v1/"
        timeout_s = 5
        connect_timeout_s = 1.5
        first_token_timeout_s = 2
        stream_idle_timeout_s = 3
        retries = 2
        circuit_failures = 3
        circuit_open_s = 30
        max_concurrency = 8
        drop_params = ["seed", "logprobs"]
        headers = { X-Team = "search" }
        """
    ).providers["x"]
    assert p.base_url == "https://proxy.example/groq/v1"  # user's, trailing slash removed
    assert p.quirks.drop_params == PRESETS["groq"].quirks.drop_params | {"seed"}
    assert p.quirks.message_name is False and p.quirks.max_n == 1
    assert (p.timeout_s, p.connect_timeout_s, p.first_token_timeout_s, p.stream_idle_timeout_s) == (
        5.0,
        1.5,
        2.0,
        3.0,
    )
    assert isinstance(p.timeout_s, float)
    assert (p.retries, p.circuit_failures, p.circuit_open_s, p.max_concurrency) == (2, 3, 30.0, 8)
    assert dict(p.headers) == {"X-Team": "search"}


def test_anthropic_fields_go_to_quirks() -> None:
    p = _provider_graph(
        'preset = "anthropic"\napi_keys = ["env:TEAM_KEY"]\nanthropic_version = "2024-01-01"\n'
        "default_max_tokens = 1024\n"
    ).providers["x"]
    assert (p.api, p.base_url) == ("anthropic", "https://api.anthropic.com/v1")
    assert (p.quirks.anthropic_version, p.quirks.default_max_tokens) == ("2024-01-01", 1024)


def test_provider_without_preset() -> None:
    p = _provider_graph('api = "anthropic"\nbase_url = "http://127.0.0.1:9/v1"\napi_keys = []\n').providers[
        "x"
    ]
    assert (p.api, p.base_url, p.api_keys, p.preset, p.quirks) == (
        "anthropic",
        "http://127.0.0.1:9/v1",
        (),
        None,
        Quirks(),
    )
    assert (p.timeout_s, p.connect_timeout_s, p.retries, p.max_concurrency) == (60.0, 10.0, 0, 64)


@pytest.mark.parametrize("name", ["vllm", "ollama"])
def test_local_presets_are_keyless(name: str) -> None:
    p = _provider_graph(f'preset = "{name}"\n', env={}).providers["x"]
    assert p.api_keys == () and p.base_url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_compiles(name: str) -> None:
    p = _provider_graph(f'preset = "{name}"\napi_keys = []\n').providers["x"]
    assert p.base_url == PRESETS[name].base_url and not p.base_url.endswith("/")
    assert p.base_url.startswith(("https://", "http://127.0.0.1:"))


def test_required_presets_exist() -> None:
    required = {"openai", "anthropic", "mistral", "groq", "cerebras", "deepinfra", "gemini"}
    assert required | {"openrouter", "together", "vllm", "ollama"} <= set(PRESETS)
    assert PRESETS["gemini"].base_url == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert PRESETS["gemini"].quirks.stream_tool_finish is True
    assert PRESETS["cerebras"].quirks.developer_role is False
    assert {"frequency_penalty", "presence_penalty", "parallel_tool_calls"} <= PRESETS[
        "cerebras"
    ].quirks.drop_params
    assert PRESETS["deepinfra"].quirks.rename_params == {"max_completion_tokens": "max_tokens"}


# --- fallbacks, keys, server, state --------------------------------------------------------

ONE_MODEL = '[providers.p]\npreset = "vllm"\n[models.a]\nprovider = "p"\nmodel = "a"\n'
TWO_MODELS = ONE_MODEL + '[models.b]\nprovider = "p"\nmodel = "b"\n'


def test_weighted_order_defaults_to_equal_weights() -> None:
    g = compile_text(TWO_MODELS + '[fallbacks.w]\nchain = ["a", "b"]\norder = "weighted"\n')
    w = g.nodes["w"]
    assert isinstance(w, Fallback) and w.weights == (1.0, 1.0) and w.order == "weighted"
    g = compile_text(TWO_MODELS + '[fallbacks.w]\nchain = ["a", "b"]\norder = "weighted"\nweights = [3, 0]\n')
    assert g.nodes["w"].weights == (3.0, 0.0)  # type: ignore[union-attr]


def test_empty_retry_on_is_allowed() -> None:
    g = compile_text(ONE_MODEL + '[fallbacks.f]\nchain = ["a"]\nretry_on = []\n')
    assert g.nodes["f"].retry_on == frozenset()  # type: ignore[union-attr]


def test_client_keys() -> None:
    digest = hashlib.sha256(b"abc").hexdigest()
    g = compile_text(
        ONE_MODEL
        + '[fallbacks.chat]\nchain = ["a"]\n'
        + '[keys.team-a]\nkey = "env:TEAM_KEY"\nallow = ["chat"]\nrpm = 60\nbudget_usd = 5\n'
        + f'[keys.ops]\nkey_sha256 = "{digest.upper()}"\nbudget_period = "day"\n'
    )
    team, ops = g.keys["team-a"], g.keys["ops"]
    assert team.sha256 == hashlib.sha256(b"team-secret").hexdigest()
    assert team.allow == frozenset({"chat"}) and team.rpm == 60 and team.budget_usd == 5.0
    assert team.budget_period == "month"
    assert ops.sha256 == digest and ops.allow is None and ops.budget_period == "day"
    assert g.keys_by_hash == {team.sha256: team, ops.sha256: ops}
    assert not g.open_access


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:4000", "127.0.0.1", 4000),
        ("[::1]:8080", "::1", 8080),
        ("localhost:0", "localhost", 0),
        ("127.0.0.2:65535", "127.0.0.2", 65535),
    ],
)
def test_listen_on_loopback_without_keys(listen: str, host: str, port: int) -> None:
    g = compile_text(ONE_MODEL + f'[server]\nlisten = "{listen}"\n')
    assert (g.server.host, g.server.port) == (host, port)


@pytest.mark.parametrize("listen", ["0.0.0.0:4000", "[::]:4000", "10.0.0.5:80", "router.internal:4000"])
def test_any_address_with_keys(listen: str) -> None:
    g = compile_text(ONE_MODEL + f'[server]\nlisten = "{listen}"\n[keys.k]\nkey_sha256 = "{"0" * 64}"\n')
    assert f"{g.server.host}:{g.server.port}".endswith(str(g.server.port))


def test_server_and_state_settings() -> None:
    g = compile_text(
        ONE_MODEL
        + '[server]\nadmin_key = "env:ADMIN"\nmax_body_bytes = 1000\nwatch = false\n'
        + '[state]\nbackend = "redis://127.0.0.1:6379/0"\nspend_log = "data/spend.db"\n'
    )
    assert g.server.admin_key is not None and g.server.admin_key.ref == "env:ADMIN"
    assert g.server.admin_key.reveal() == "adm"
    assert (g.server.max_body_bytes, g.server.watch) == (1000, False)
    assert g.state.backend == "redis://127.0.0.1:6379/0"
    assert g.state.spend_log == Path("/etc/router/data/spend.db")  # relative to router.toml


def test_absolute_spend_log_is_kept() -> None:
    g = compile_text(ONE_MODEL + '[state]\nspend_log = "/var/lib/router/spend.db"\n')
    assert g.state.spend_log == Path("/var/lib/router/spend.db")


def test_load_reads_the_file_and_anchors_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "router.toml").write_text(ONE_MODEL + '[state]\nspend_log = "spend.db"\n')
    g = load(tmp_path / "router.toml", {}, generation=3)
    assert g.state.spend_log == tmp_path / "spend.db"
    assert g.source == tmp_path / "router.toml" and g.generation == 3


def test_names_with_dots_and_slashes() -> None:
    g = compile_text(
        '[providers.p]\npreset = "vllm"\n[models."openai/gpt-4.1"]\nprovider = "p"\nmodel = "x"\n'
        '[fallbacks."chat.v2"]\nchain = ["openai/gpt-4.1"]\n'
    )
    assert set(g.nodes) == {"openai/gpt-4.1", "chat.v2"}


def test_spec_classes_match_field_tables() -> None:
    pairs = [
        (schema_mod.ServerSpec, schema_mod.SERVER_FIELDS),
        (schema_mod.StateSpec, schema_mod.STATE_FIELDS),
        (schema_mod.ProviderSpec, schema_mod.PROVIDER_FIELDS),
        (schema_mod.ModelSpec, schema_mod.MODEL_FIELDS),
        (schema_mod.PriceSpec, schema_mod.PRICE_FIELDS),
        (schema_mod.FallbackSpec, schema_mod.FALLBACK_FIELDS),
        (schema_mod.RaceSpec, schema_mod.RACE_FIELDS),
        (schema_mod.KeySpec, schema_mod.KEY_FIELDS),
    ]
    for cls, table in pairs:
        assert {f.name for f in dataclasses.fields(cls)} - {"name"} == set(table), cls.__name__


# --- fingerprints ----------------------------------------------------------------------------


def fingerprints(g: Graph) -> dict[str, str]:
    out = {f"node:{n}": node.fingerprint for n, node in g.nodes.items()}
    out |= {f"provider:{n}": p.fingerprint for n, p in g.providers.items()}
    out |= {f"key:{n}": k.fingerprint for n, k in g.keys.items()}
    return out


KEYED = NESTED + '\n[keys.team]\nkey = "env:TEAM_KEY"\nbudget_usd = 10\n'


def test_fingerprints_are_stable_across_loads() -> None:
    first, second = fingerprints(compile_text(KEYED)), fingerprints(compile_text(KEYED, generation=9))
    assert first == second
    assert all(len(fp) == 16 and int(fp, 16) >= 0 for fp in first.values())
    assert len(set(first.values())) == len(first)  # distinct definitions, distinct fingerprints


def test_fingerprints_ignore_layout_comments_and_secret_values() -> None:
    base = fingerprints(compile_text(KEYED))
    relaid = "# a comment\n" + KEYED.replace("[races.fast]", "# fast\n\n[races.fast]").replace(
        "hedge_ms = 250", "hedge_ms   =   250   # ms"
    )
    assert fingerprints(compile_text(relaid)) == base
    rotated = {**ENV, "MISTRAL_API_KEY": "mk-2-rotated"}
    assert fingerprints(compile_text(KEYED, env=rotated)) == base


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        # a leaf's price: the leaf and every group above it
        ("input = 0.59", "input = 0.6", {"node:llama", "node:fast", "node:chat"}),
        # a deeper leaf: large → backup → fast → chat
        (
            '"mistral-large-latest"',
            '"mistral-large-2411"',
            {"node:large", "node:backup", "node:fast", "node:chat"},
        ),
        # a group's own field: itself and its parents only
        ('order = "cheapest"', 'order = "fastest"', {"node:backup", "node:fast", "node:chat"}),
        ("hedge_ms = 250", "hedge_ms = 100", {"node:fast", "node:chat"}),
        ('chain = ["small", "fast"]', 'chain = ["fast", "small"]', {"node:chat"}),
        # a provider: it, its deployments, and their groups; groq's side is untouched
        (
            'api_keys = ["env:MISTRAL_API_KEY"]',
            'api_keys = ["env:MISTRAL_API_KEY"]\ntimeout_s = 5',
            {"provider:mistral", "node:small", "node:large", "node:backup", "node:fast", "node:chat"},
        ),
        # a key reference (not its value) is part of the provider's definition
        (
            '["env:GROQ_API_KEY"]',
            '["env:TEAM_KEY"]',
            {"provider:groq", "node:llama", "node:fast", "node:chat"},
        ),
        ("budget_usd = 10", "budget_usd = 20", {"key:team"}),
    ],
)
def test_fingerprints_change_exactly_for_changed_definitions(old: str, new: str, changed: set[str]) -> None:
    assert old in KEYED
    before, after = fingerprints(compile_text(KEYED)), fingerprints(compile_text(KEYED.replace(old, new, 1)))
    assert before.keys() == after.keys()
    assert {k for k in before if before[k] != after[k]} == changed
