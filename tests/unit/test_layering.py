"""Imports flow one way (STYLE.md, "A layout to start from"), checked by parsing every module.

A unit is a top-level module or subpackage of asgi_router; ``ALLOWED`` lists what each may
import besides itself and BASE (``types``, ``errors`` and the version-only package root).
Departures from STYLE.md's table, each deliberate:
- wire: graph, because ``wire/usage.py`` prices a Usage with ``graph.Price`` (a frozen value).
- translate, upstream, routing: also errors/types via BASE (the error tree is shared by design).
- routing: translate only through ``translate.base`` (the Translation/StreamTranslator types),
  and metrics (it counts attempts); never a concrete translator.
- metrics/limits/spendlog/reload/logs are top-level modules STYLE lists without a rule; their
  rows below are what they need and nothing more. web may use every gateway unit but not the
  process-level ones (cli, serve, demo) nor the simulator.
- heads (a response head for h11, used by serve's hypercorn protocol) imports nothing of ours;
  h11 is for it and serve alone.
- sim/ is a standalone simulated provider (an aiohttp server): it imports nothing of the
  gateway, so it cannot share a bug with it; that is also why it may import aiohttp.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "asgi_router"
BASE = {"types", "errors", "__init__"}
GATEWAY = "graph config wire translate state upstream metrics logs limits spendlog routing reload"
RULES = f"""
types, errors, __init__, sim, logs, state, graph, memory, heads:
config: graph
wire: graph
translate: wire graph
upstream: wire graph state
metrics: graph
limits: graph state
spendlog: graph wire
routing: graph state upstream wire translate.base metrics
reload: config graph logs metrics routing state upstream wire
web: {GATEWAY} memory
serve: graph config logs metrics web heads
demo: sim serve web config
cli: {GATEWAY} serve demo
__main__: cli
"""
ALLOWED = {
    unit.strip(): set(deps.split())
    for line in RULES.strip().splitlines()
    for units, _, deps in [line.partition(":")]
    for unit in units.split(",")
}
NO_BASE = {"types", "errors", "__init__", "sim"}
# third-party packages only some units may import
ONLY = {
    "starlette": {"web"},
    "httpx": {"upstream"},
    "aiohttp": {"upstream", "sim"},
    "hypercorn": {"serve"},
    "h11": {"serve", "heads"},
}
# reading the environment: config/ (secrets.py); cli.py and serve.py hand log settings and
# PROMETHEUS_MULTIPROC_DIR to worker processes and `init` reads which provider keys are set;
# metrics.py asks PROMETHEUS_MULTIPROC_DIR (prometheus_client's own multiprocess switch).
ENV_READERS = {"config", "cli", "serve", "metrics"}
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
MODULES = sorted(p for p in PKG.rglob("*.py"))


def unit_of(dotted: str) -> str:
    """``asgi_router.routing.execute`` → ``routing``; ``asgi_router`` → ``__init__``."""
    parts = dotted.split(".")[1:]
    return parts[0] if parts else "__init__"


def imports(path: Path) -> tuple[set[str], set[str], bool]:
    """(our modules imported, third-party top-level names, whether it touches os.environ)."""
    mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    ours, third, env = set(), set(), False
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]
            env |= base == "os" and any(a.name in ENV_NAMES for a in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            env |= node.value.id == "os" and node.attr in ENV_NAMES
        ours |= {n for n in names if n.split(".")[0] == "asgi_router"}
        third |= {n.split(".")[0] for n in names if n.split(".")[0] != "asgi_router"}
    return ours, third, env


def _is_module(dotted: str) -> bool:
    p = PKG.parent.joinpath(*dotted.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_flow_one_way(path: Path) -> None:
    me = unit_of("asgi_router." + ".".join(path.relative_to(PKG).with_suffix("").parts))
    assert me in ALLOWED, f"new unit {me!r}: add it to ALLOWED with what it may import"
    ours, third, env = imports(path)
    allowed = ALLOWED[me] | ({me} if me != "__init__" else set()) | (set() if me in NO_BASE else BASE)
    for target in sorted(ours):
        rel = target.removeprefix("asgi_router").lstrip(".") or "__init__"
        ok = any(rel == a or rel.startswith(a + ".") for a in allowed)
        assert ok, f"{path.relative_to(PKG)} ({me}) imports {target}; {me} may import only {sorted(allowed)}"
    for name, units in ONLY.items():
        assert name not in third or me in units, f"{path.relative_to(PKG)} imports {name}: only {units} may"
    assert not env or me in ENV_READERS, f"{path.relative_to(PKG)} reads the environment: only {ENV_READERS}"


def test_package_root_imports_nothing() -> None:
    tree = ast.parse((PKG / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
