"""Secret references, and proof that no secret value reaches describe, redacted or errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from asgi_router.config import ConfigErrors, describe, load, loads, redacted
from asgi_router.config.describe import mask_url
from asgi_router.config.secrets import NOT_A_REFERENCE, SecretError, parse_ref, resolve

FAKE = "sk-FAKE-9f2c4e7a1b3d5f60-do-not-leak"
FAKE_FILE = "sk-FILE-0a1b2c3d4e5f-do-not-leak"
FAKE_HASH = hashlib.sha256(FAKE.encode()).hexdigest()


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("env:OPENAI_API_KEY", ("env", "OPENAI_API_KEY")),
        ("file:secrets/key.txt", ("file", "secrets/key.txt")),
        ("file:/run/secrets/k", ("file", "/run/secrets/k")),
        ("env:", ("env", "")),
        ("sk-abc", None),
        ("ENV:X", None),
        ("https://x", None),
        ("", None),
    ],
)
def test_parse_ref(value: str, parsed: tuple[str, str] | None) -> None:
    assert parse_ref(value) == parsed


def test_resolve_env_and_file(tmp_path: Path) -> None:
    (tmp_path / "k.txt").write_text(FAKE_FILE + "\n")
    env_secret = resolve("env:K", {"K": FAKE}, tmp_path)
    file_secret = resolve("file:k.txt", {}, tmp_path)
    assert (env_secret.ref, env_secret.reveal()) == ("env:K", FAKE)
    assert (file_secret.ref, file_secret.reveal()) == ("file:k.txt", FAKE_FILE)  # newline stripped
    assert FAKE not in repr(env_secret) and FAKE not in str(env_secret)


def test_resolve_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ASGI_ROUTER_TEST_SECRET", FAKE)
    assert resolve("env:ASGI_ROUTER_TEST_SECRET", None, tmp_path).reveal() == FAKE


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("env:NOPE", "environment variable NOPE is not set (env:NOPE)"),
        ("file:nope.txt", "cannot read file:nope.txt"),
        ("file:empty.txt", "file:empty.txt is empty"),
        ("plain", NOT_A_REFERENCE),
    ],
)
def test_resolve_errors_name_the_reference(tmp_path: Path, ref: str, message: str) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(SecretError) as info:
        resolve(ref, {}, tmp_path)
    assert message in str(info.value)


def test_load_defaults_env_to_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ASGI_ROUTER_TEST_SECRET", FAKE)
    path = tmp_path / "router.toml"
    path.write_text(
        '[providers.p]\npreset = "openai"\napi_keys = ["env:ASGI_ROUTER_TEST_SECRET"]\n'
        '[models.m]\nprovider = "p"\nmodel = "x"\n'
    )
    assert load(path).providers["p"].api_keys[0].reveal() == FAKE


def _graph(tmp_path: Path):
    (tmp_path / "admin.key").write_text(FAKE_FILE)
    path = tmp_path / "router.toml"
    path.write_text(
        f"""
[server]
listen = "0.0.0.0:4000"
admin_key = "file:admin.key"

[providers.p]
preset = "openai"
api_keys = ["env:FAKE_A", "env:FAKE_B"]
headers = {{ X-Team = "{FAKE}" }}

[models.m]
provider = "p"
model = "gpt"
price = {{ input = 1, output = 2 }}

[races.r]
members = ["m"]

[keys.team]
key = "env:FAKE_A"

[state]
backend = "redis://:{FAKE}@cache.internal:6379/0"
"""
    )
    return load(path, {"FAKE_A": FAKE, "FAKE_B": FAKE + "-2"})


def test_no_secret_in_describe_or_redacted(tmp_path: Path) -> None:
    g = _graph(tmp_path)
    assert g.providers["p"].api_keys[0].reveal() == FAKE  # the value is there to use
    text = describe(g)
    blob = json.dumps(redacted(g))
    for out in (text, blob):
        assert FAKE not in out and FAKE_FILE not in out
        assert FAKE_HASH not in out
    # The graph's own repr shows secrets as references (header values and URLs are not secrets).
    assert FAKE_FILE not in repr(g) and "Secret('env:FAKE_A')" in repr(g)
    assert "env:FAKE_A" in text and "env:FAKE_B" in blob and "file:admin.key" in blob
    assert FAKE_HASH[:8] in text and FAKE_HASH[:8] in blob


def test_redacted_shape(tmp_path: Path) -> None:
    data = redacted(_graph(tmp_path))
    assert json.loads(json.dumps(data)) == data  # JSON-able as it is
    assert data["server"]["admin_key"] == "file:admin.key"
    assert data["providers"]["p"]["api_keys"] == ["env:FAKE_A", "env:FAKE_B"]
    assert data["providers"]["p"]["headers"] == {"X-Team": "***"}
    assert data["keys"]["team"]["sha256"] == FAKE_HASH[:8]
    assert data["state"]["backend"] == "redis://:***@cache.internal:6379/0"
    assert data["nodes"]["r"] == {
        "kind": "race",
        "fingerprint": data["nodes"]["r"]["fingerprint"],
        "members": ["m"],
        "hedge_ms": 0.0,
    }
    assert data["nodes"]["m"]["price"] == {"input": 1.0, "output": 2.0, "cached_input": None}
    assert data["open_access"] is False


@pytest.mark.parametrize(
    ("field", "snippet"),
    [
        ("api_keys", f'[providers.q]\npreset = "openai"\napi_keys = ["{FAKE}"]\n'),
        ("api_keys", f'[providers.q]\npreset = "openai"\napi_keys = ["{FAKE}", "{FAKE}"]\n'),
        ("admin_key", f'[server]\nadmin_key = "{FAKE}"\n'),
        ("key", f'[keys.k]\nkey = "{FAKE}"\nallow = ["nope"]\n'),
        ("api_keys", f'[providers.q]\npreset = "openai"\napi_keys = "{FAKE}"\n'),
        ("admin_key", f'[server]\nadmin_key = ["{FAKE}"]\n'),
        (
            "header",
            f'[providers.q]\npreset = "openai"\napi_keys = []\nheaders = {{ Authorization = "{FAKE}" }}\n',
        ),
        ("toml", f'[server]\nadmin_key = "{FAKE}\n'),
    ],
)
def test_no_secret_in_errors(field: str, snippet: str) -> None:
    text = snippet + '[providers.p]\npreset = "vllm"\n[models.m]\nprovider = "p"\nmodel = "x"\n'
    with pytest.raises(ConfigErrors) as info:
        loads(text, path=Path("router.toml"), env={"FAKE_A": FAKE})
    assert FAKE not in str(info.value), field
    assert all(FAKE not in repr(e) for e in info.value.errors)


def test_mask_url() -> None:
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert mask_url("memory") == "memory"
