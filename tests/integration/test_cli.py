"""CONTRACT §5, every command run as a subprocess (``python -m asgi_router ...``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from asgi_router import config
from asgi_router.sim import SimServer
from tests.helpers import Gateway, free_port, model, provider

PROVIDER_VARS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
    "GEMINI_API_KEY",
    "CEREBRAS_API_KEY",
    "DEEPINFRA_API_KEY",
    "TOGETHER_API_KEY",
    "OPENROUTER_API_KEY",
)


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS}
    return subprocess.run(
        [sys.executable, "-m", "asgi_router", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )


def assert_no_traceback(out: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out.stdout + out.stderr, out.stderr


GOOD = """\
[server]
listen = "127.0.0.1:4999"

[providers.up]  # a comment
api = "openai"
base_url = "http://127.0.0.1:9/v1"
api_keys = ["env:CLI_UP_KEY"]

[models.small]
provider = "up"
model = "up-small"
price = { input = 1.0, output = 2.0 }

[models.big]
provider = "up"
model = "up-big"

[races.quick]
members = ["small", "big"]

[fallbacks.chat]
chain = ["quick", "big"]
"""

BAD = """\
[server]
listen = "127.0.0.1:4999"
admin_kye = "x"

[providers.up]
api = "openai"
base_url = "http://127.0.0.1:9/v1"
api_keys = ["env:CLI_NOT_SET"]

[models.a]
provider = "nothere"
model = "x"
price = { input = "cheap", output = 1 }

[fallbacks.chat]
chain = ["a", "ghost"]
"""
BAD_ERRORS = [  # (line, text in the message)
    (3, "[server.admin_kye] unknown key"),
    (8, "CLI_NOT_SET is not set"),
    (11, "unknown provider 'nothere'"),
    (13, "[models.a.price.input] must be a number"),
    (16, "unknown name 'ghost'"),
]


# check --------------------------------------------------------------------------------------


def test_check_prints_the_graph_of_a_good_file(tmp_path: Path) -> None:
    (tmp_path / "router.toml").write_text(GOOD)
    out = cli("check", env={"CLI_UP_KEY": "k-123456789"}, cwd=tmp_path)  # router.toml by default
    assert out.returncode == 0, out.stderr
    for name in ("small", "big", "quick", "chat", "up", "env:CLI_UP_KEY"):
        assert re.search(rf"\b{re.escape(name)}\b", out.stdout), name
    assert "routes" in out.stdout and "providers" in out.stdout
    assert "k-123456789" not in out.stdout


def test_check_lists_every_error_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    out = cli("check", str(path))
    assert out.returncode == 1
    assert_no_traceback(out)
    assert f"{len(BAD_ERRORS)} error(s)" in out.stderr
    for line, text in BAD_ERRORS:
        assert any(f"{path}:{line}:" in x and text in x for x in out.stderr.splitlines()), (line, out.stderr)
    assert out.stdout == ""


def test_check_of_a_missing_or_unparsable_file(tmp_path: Path) -> None:
    out = cli("check", str(tmp_path / "absent.toml"))
    assert out.returncode == 1 and "absent.toml" in out.stderr
    assert_no_traceback(out)
    (tmp_path / "broken.toml").write_text("[server\nlisten = 1\n")
    out = cli("check", str(tmp_path / "broken.toml"))
    assert out.returncode == 1 and "broken.toml:1:" in out.stderr and "invalid TOML" in out.stderr
    assert_no_traceback(out)


# serve ----------------------------------------------------------------------------------------


def test_serve_with_a_broken_config_exits_1_listing_errors(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(BAD)
    out = cli("serve", "--config", str(path))
    assert out.returncode == 1
    assert_no_traceback(out)
    for line, text in BAD_ERRORS:
        assert f"{path}:{line}:" in out.stderr and text in out.stderr
    out = cli("serve", "--config", str(tmp_path / "absent.toml"))
    assert out.returncode == 1 and "absent.toml" in out.stderr
    assert_no_traceback(out)


# keys new -------------------------------------------------------------------------------------


def test_keys_new_appends_only_the_hash_and_the_key_then_works(
    gateway: Callable[..., Gateway], sim: SimServer
) -> None:
    first = "first-key-0123456789"
    gw = gateway(
        "# team keys below; keep this comment\n"
        + provider("up", sim.base_url)
        + model("m", "up", "up-m")
        + '[keys.first]\nkey = "env:FIRST_KEY"  # an inline comment\n',
        env={"FIRST_KEY": first},
    )
    before = gw.path.read_text()
    out = cli("keys", "new", "second", "--config", str(gw.path))
    assert out.returncode == 0, out.stderr
    (key,) = re.findall(r"sk-router-[A-Za-z0-9_-]{20,}", out.stdout)
    assert out.stdout.count(key) == 1  # shown once
    after = gw.path.read_text()
    assert after.startswith(before)  # every byte and comment kept
    assert key not in after
    assert tomllib.loads(after)["keys"]["second"] == {"key_sha256": hashlib.sha256(key.encode()).hexdigest()}
    r = gw.post("/admin/reload")
    assert r.status_code == 200, r.text
    assert gw.openai(key).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert gw.openai(first).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert (
        gw.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={"authorization": "Bearer sk-router-guessed"},
        ).status_code
        == 401
    )
    # the same name again: refused, the file untouched
    again = cli("keys", "new", "second", "--config", str(gw.path))
    assert again.returncode == 1 and "already exists" in again.stderr
    assert gw.path.read_text() == after


# init -----------------------------------------------------------------------------------------


def test_init_prints_a_config_that_loads(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-openai-VALUE0001", "GROQ_API_KEY": "gsk_groqVALUE0002"}
    out = cli("init", "--config", "-", env=env)
    assert out.returncode == 0, out.stderr
    assert "VALUE0001" not in out.stdout and "VALUE0002" not in out.stdout
    doc = tomllib.loads(out.stdout)
    assert set(doc["providers"]) == {"openai", "groq"}
    graph = config.loads(out.stdout, path=tmp_path / "router.toml", env=env)
    assert "chat" in graph.nodes and len(graph.deployments) == 2
    assert [s.ref for s in graph.providers["groq"].api_keys] == ["env:GROQ_API_KEY"]


def test_init_without_provider_keys_points_at_a_local_server(tmp_path: Path) -> None:
    out = cli("init", "--config", "-")
    assert out.returncode == 0, out.stderr
    graph = config.loads(out.stdout, path=tmp_path / "router.toml", env={})
    assert [p.preset for p in graph.providers.values()] == ["ollama"]


def test_init_writes_a_file_and_never_overwrites_one(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    out = cli("init", "--config", str(path), env={"MISTRAL_API_KEY": "m-123"})
    assert out.returncode == 0 and path.exists(), out.stderr
    assert cli("check", str(path), env={"MISTRAL_API_KEY": "m-123"}).returncode == 0
    path.write_text("# mine\n")
    out = cli("init", "--config", str(path))
    assert out.returncode == 1 and "exists" in out.stderr
    assert path.read_text() == "# mine\n"


# spend ----------------------------------------------------------------------------------------


def spend_rows(path: Path, by: str, since: str = "24h") -> dict[str, list[float]]:
    """``asgi-router spend`` as {name: [requests, input, output, usd, waste]}, run where the
    provider's key is NOT in the environment (reports need no secrets)."""
    out = cli("spend", "--by", by, "--since", since, "--config", str(path))
    assert out.returncode == 0, out.stderr
    head, *rows = out.stdout.splitlines()
    assert head.split()[0] == by
    return {r.split()[0]: [float(x) for x in r.split()[1:]] for r in rows if r.strip()}


def spend_count(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM spend").fetchone()[0])
        except sqlite3.OperationalError:  # created, table not yet
            return 0


def test_spend_by_key_route_provider_and_model(
    gateway: Callable[..., Gateway], sim: SimServer, sim2: SimServer
) -> None:
    gw = gateway(
        provider("up", sim.base_url, api_keys=["env:SPEND_UP_KEY"])
        + provider("up2", sim2.base_url)
        + model("small", "up", "up-small", price={"input": 1.0, "output": 2.0})
        + model("other", "up2", "up2-other", price={"input": 10.0, "output": 20.0})
        + '[fallbacks.chat]\nchain = ["small", "other"]\n'
        + '[keys.alice]\nkey = "env:ALICE"\n[keys.bob]\nkey = "env:BOB"\n'
        + '[state]\nspend_log = "spend.db"\n',
        env={"SPEND_UP_KEY": "sk-up-1234567890", "ALICE": "alice-key-123456", "BOB": "bob-key-1234567"},
    )
    msgs = [{"role": "user", "content": "x"}]
    gw.openai("alice-key-123456").chat.completions.create(model="small", messages=msgs)
    gw.openai("alice-key-123456").chat.completions.create(model="chat", messages=msgs)
    sim.script("up-small", [{"status": 500}])
    gw.openai("bob-key-1234567").chat.completions.create(model="chat", messages=msgs)  # falls back to other
    db, deadline = gw.path.parent / "spend.db", time.monotonic() + 3
    while spend_count(db) < 3:  # the log is flushed once a second
        assert time.monotonic() < deadline, "the spend log was not written"
        time.sleep(0.05)
    rows = spend_rows(gw.path, "key")
    small, other = (10 * 1.0 + 5 * 2.0) / 1e6, (10 * 10.0 + 5 * 20.0) / 1e6
    assert rows["alice"][:3] == [2, 20, 10] and rows["alice"][3] == pytest.approx(2 * small, abs=1e-6)
    assert rows["bob"][:3] == [1, 10, 5] and rows["bob"][3] == pytest.approx(other, abs=1e-6)
    assert list(rows) == ["bob", "alice"]  # costliest first
    by_route = spend_rows(gw.path, "route")
    assert {k: v[0] for k, v in by_route.items()} == {"small": 1, "chat": 2}
    assert {k: v[0] for k, v in spend_rows(gw.path, "provider").items()} == {"up": 2, "up2": 1}
    by_model = spend_rows(gw.path, "model")
    assert {k: v[0] for k, v in by_model.items()} == {"small": 2, "other": 1}
    assert by_model["other"][3] == pytest.approx(other, abs=1e-6)


def test_spend_rejects_a_bad_since_and_explains_a_missing_log(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(GOOD + '\n[state]\nspend_log = "nothing-yet.db"\n')
    out = cli("spend", "--since", "yesterday", "--config", str(path))
    assert out.returncode == 2 and "--since" in out.stderr
    assert_no_traceback(out)
    out = cli("spend", "--config", str(path))
    assert out.returncode == 1 and "spend log" in out.stderr
    assert_no_traceback(out)


# demo -----------------------------------------------------------------------------------------


def test_demo_smoke_shows_a_fallback(tmp_path: Path) -> None:
    out = cli("demo", "--smoke", "--port", str(free_port()), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert_no_traceback(out)
    answered = {}
    for line in out.stdout.splitlines():
        m = re.match(r"\s*(\S+) stream=(True|False)\s+answered by (\S+)\s+attempts=(\d+)", line)
        if m:
            answered[(m[1], m[2] == "True")] = (m[3], int(m[4]))
    assert answered[("chat", False)][1] >= 2  # the first member's 429, then the race
    assert answered[("chat", False)][0] != "acme-flaky"
    assert answered[("cross", False)][0] == "initech-claude"
    assert not list(tmp_path.iterdir())  # the demo cleans up after itself


def test_version_and_help() -> None:
    out = cli("--version")
    assert out.returncode == 0 and re.match(r"asgi-router \d+\.\d+", out.stdout)
    out = cli("--help")
    for command in ("serve", "check", "demo", "keys", "spend", "init"):
        assert command in out.stdout
