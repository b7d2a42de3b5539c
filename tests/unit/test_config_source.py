"""The best-effort line map, key paths, the public surface, and the example router.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

import asgi_router.config as config
from asgi_router.config import describe, load, redacted
from asgi_router.config.source import LineMap, format_path, split_key_path
from asgi_router.graph import Fallback, Race

TEXT = """\
top = 1
[server]
listen = "x"

[models."gpt-4.1"]
provider = "p"
price.input = 1
"quoted key" = 2

[ models . 'lit.eral' ]   # comment
note = \"\"\"
chain = ["not a key"]
\"\"\"
after = 3

[models.n.price]
output = 2
"""


@pytest.mark.parametrize(
    ("where", "line"),
    [
        (("top",), 1),
        (("server",), 2),
        (("server", "listen"), 3),
        (("server", "admin_key"), 2),  # not written: its table's header
        (("models",), 5),  # implied by the first [models.*] header
        (("models", "gpt-4.1"), 5),
        (("models", "gpt-4.1", "provider"), 6),
        (("models", "gpt-4.1", "price"), 7),
        (("models", "gpt-4.1", "price", "input"), 7),
        (("models", "gpt-4.1", "quoted key"), 8),
        (("models", "lit.eral"), 10),
        (("models", "lit.eral", "chain"), 10),  # inside a multi-line string: not a key
        (("models", "lit.eral", "after"), 14),
        (("models", "n", "price", "output"), 17),
        (("nowhere",), None),
    ],
)
def test_line_map(where: tuple[str, ...], line: int | None) -> None:
    assert LineMap(TEXT).line(where) == line


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("a.b", ("a", "b")),
        ('models."gpt-4.1"', ("models", "gpt-4.1")),
        ("models . 'x.y' . z", ("models", "x.y", "z")),
        ('"a\\"b"', ('a"b',)),
    ],
)
def test_split_and_format_key_path(text: str, path: tuple[str, ...]) -> None:
    assert split_key_path(text) == path
    assert split_key_path(format_path(path)) == path


def test_format_path_quotes_only_when_needed() -> None:
    assert format_path(("models", "gpt-4.1", "price")) == 'models."gpt-4.1".price'
    assert format_path(("keys", "team-a")) == "keys.team-a"


def test_public_surface() -> None:
    for name in config.__all__:
        assert hasattr(config, name), name
    assert {"load", "loads", "describe", "redacted", "append_key", "init_toml", "new_key_table"} <= set(
        config.__all__
    )


EXAMPLE = Path(__file__).parent.parent.parent / "router.toml"
EXAMPLE_ENV = {
    name: f"dummy-{name.lower()}"
    for name in (
        "MISTRAL_API_KEY",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GROQ_API_KEY",
        "TEAM_A_KEY",
        "ROUTER_ADMIN_KEY",
    )
}


def test_example_router_toml_compiles() -> None:
    g = load(EXAMPLE, EXAMPLE_ENV)
    assert set(g.providers) >= {"mistral", "openai", "anthropic", "groq"}
    assert {p.preset for p in g.providers.values()} >= {"mistral", "openai", "anthropic", "groq"}
    assert all(s.ref.startswith("env:") for p in g.providers.values() for s in p.api_keys)
    chat, fast = g.nodes["chat"], g.nodes["fast"]
    assert isinstance(chat, Fallback) and isinstance(fast, Race)
    assert fast in chat.members
    assert all(d.price is not None for d in g.deployments)
    assert "team-a" in g.keys and g.server.admin_key is not None
    assert g.state.spend_log is not None and g.state.spend_log.parent == EXAMPLE.parent.absolute()
    text = describe(g) + str(redacted(g))
    assert not any(value in text for value in EXAMPLE_ENV.values())
