"""``keys new`` (append one table, atomically, keeping the text) and ``init`` (a starter file)."""

from __future__ import annotations

import hashlib
import os
import stat
import tomllib
from pathlib import Path

import pytest

from asgi_router.config import ConfigErrors, append_key, init_toml, load, new_key_table
from asgi_router.config.writer import KEY_PREFIX, STARTER_ENV

EXISTING = """\
# my router: keep this comment
[providers.p]
preset = "vllm"   # local

[models.m]
provider = "p"
model = "x"
"""


@pytest.mark.parametrize("name", ["team-a", "ops_1", "with space", "dotted.name", 'quo"te', "ünï"])
def test_new_key_table_round_trips(name: str) -> None:
    digest = "ab" * 32
    text = new_key_table(name, digest)
    assert tomllib.loads(text) == {"keys": {name: {"key_sha256": digest}}}


def test_new_key_table_text() -> None:
    assert new_key_table("team-a", "0" * 64) == f'[keys.team-a]\nkey_sha256 = "{"0" * 64}"\n'


def test_append_key_keeps_text_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(EXISTING)
    os.chmod(path, 0o640)
    key = append_key(path, "team-a")
    assert key.startswith(KEY_PREFIX) and len(key) > len(KEY_PREFIX) + 40
    text = path.read_text()
    assert text.startswith(EXISTING)  # every existing byte kept, comments included
    assert key not in text  # only its hash is written
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["router.toml"]  # no temporary file left
    g = load(path, {})
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert g.keys_by_hash[digest].name == "team-a"


def test_append_key_twice_and_without_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(EXISTING.rstrip("\n"))
    first, second = append_key(path, "a"), append_key(path, "b")
    assert first != second
    g = load(path, {})
    assert set(g.keys) == {"a", "b"}


def test_append_key_refuses_an_existing_name(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(EXISTING)
    append_key(path, "team-a")
    before = path.read_text()
    with pytest.raises(ConfigErrors) as info:
        append_key(path, "team-a")
    assert "already exists" in str(info.value)
    assert path.read_text() == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[providers\n", "cannot read the file as TOML"),
        ('keys = { other = { key_sha256 = "x" } }\n', "cannot append"),
    ],
)
def test_append_key_refuses_files_it_cannot_extend(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "router.toml"
    path.write_text(content)
    with pytest.raises(ConfigErrors) as info:
        append_key(path, "new")
    assert message in str(info.value)
    assert path.read_text() == content


def test_append_key_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors):
        append_key(tmp_path / "nope.toml", "a")


@pytest.mark.parametrize(
    "present",
    [
        [],
        ["MISTRAL_API_KEY"],
        ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"],
        sorted(STARTER_ENV.values()),
    ],
    ids=["none", "one", "two", "all"],
)
def test_init_toml_loads_with_that_env(tmp_path: Path, present: list[str]) -> None:
    env = {var: f"fake-{var}" for var in present} | {"UNRELATED": "unrelated-value"}
    text = init_toml(env)
    path = tmp_path / "router.toml"
    path.write_text(text)
    g = load(path, env)
    chat = g.nodes["chat"]
    assert chat.kind == "fallback"
    if present:
        assert {s.ref for p in g.providers.values() for s in p.api_keys} == {f"env:{v}" for v in present}
        assert len(g.providers) == len(present) == len(g.deployments)
        assert all(d.price is not None for d in g.deployments)
    else:
        assert list(g.providers) == ["ollama"] and g.providers["ollama"].api_keys == ()
    assert g.open_access and g.server.host == "127.0.0.1"
    for value in env.values():
        assert value not in text


def test_init_toml_ignores_empty_variables() -> None:
    assert "MISTRAL" not in init_toml({"MISTRAL_API_KEY": ""})
