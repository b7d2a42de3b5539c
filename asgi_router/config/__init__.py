"""router.toml → :class:`~asgi_router.graph.Graph`, or :class:`ConfigErrors` listing every problem.

The phases: ``source`` reads and parses (a syntax error stops there, with its line);
``schema`` checks keys and types; ``secrets`` resolves ``env:``/``file:`` references (the only
I/O after reading the file); ``compile`` resolves names and builds the frozen graph. All
problems from every phase are reported together, each with file, table, key and a line where
one can be found.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from asgi_router.config import schema, secrets, source
from asgi_router.config.compile import compile_specs
from asgi_router.config.describe import describe, redacted
from asgi_router.config.presets import PRESETS, Preset
from asgi_router.config.writer import append_key, init_toml, new_key_table
from asgi_router.errors import ConfigError, ConfigErrors
from asgi_router.graph import Graph

__all__ = [
    "PRESETS",
    "ConfigError",
    "ConfigErrors",
    "Preset",
    "append_key",
    "compile_specs",
    "describe",
    "init_toml",
    "load",
    "load_text",
    "loads",
    "new_key_table",
    "redacted",
    "spend_log_path",
]


def load(path: Path, env: Mapping[str, str] | None = None, *, generation: int = 0) -> Graph:
    """Read and compile ``path``. ``env`` defaults to ``os.environ``. Raises :class:`ConfigErrors`."""
    return load_text(path, env, generation=generation)[0]


def load_text(path: Path, env: Mapping[str, str] | None = None, *, generation: int = 0) -> tuple[Graph, str]:
    """:func:`load`, also returning the text that was compiled (what a supervised worker keeps
    as the last good configuration)."""
    problems = source.Problems(str(path))
    text = source.read(path, problems)
    if text is None:
        raise ConfigErrors(problems.located(None))
    return loads(text, path=path, env=env, generation=generation), text


def loads(text: str, *, path: Path, env: Mapping[str, str] | None = None, generation: int = 0) -> Graph:
    """Compile router.toml's ``text``; ``path`` names it in errors and anchors relative paths
    (``file:`` secrets, ``spend_log``). Raises :class:`ConfigErrors` with every problem found."""
    problems = source.Problems(str(path))
    doc = source.parse(text, problems)
    if doc is None:
        raise ConfigErrors(problems.located(None))
    base_dir = path.absolute().parent
    spec = schema.build(doc, problems)
    resolved = secrets.resolve_spec(spec, env, base_dir, problems)
    graph = compile_specs(
        spec, resolved, problems, base_dir=base_dir, source=path.absolute(), generation=generation
    )
    if problems:
        raise ConfigErrors(problems.located(source.LineMap(text)))
    return graph


def spend_log_path(path: Path) -> Path | None:
    """``[state] spend_log`` of ``path`` (made absolute), or None when there is none. Nothing is
    resolved or compiled: ``asgi-router spend`` runs where the provider keys need not be set.
    Raises :class:`ConfigErrors` when the file cannot be read or parsed or its [state] is bad."""
    problems = source.Problems(str(path))
    text = source.read(path, problems)
    doc = source.parse(text, problems) if text is not None else None
    if text is None or doc is None:
        raise ConfigErrors(problems.located(None))
    spec = schema.build(doc, problems)  # every table checked; only [state] matters here
    state_errors = [e for e in problems.located(source.LineMap(text)) if e.table.split(".")[0] == "state"]
    if state_errors:
        raise ConfigErrors(state_errors)
    if spec.state.spend_log is None:
        return None
    return path.absolute().parent / spec.state.spend_log
