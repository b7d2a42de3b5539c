"""``__all__`` is honest (after httpx's tests/test_exported_members.py).

For every package ``__init__`` that declares ``__all__``: each listed name exists, the list
has no duplicates, and it holds every public name the ``__init__`` defines or imports from the
package's own modules (read from its source, so type aliases count too). Names it merely uses
(stdlib, another package of ours) need not be listed, but may be, as deliberate re-exports
(``config`` re-exports the ConfigErrors it raises). Plain modules that declare ``__all__`` must
at least name things that exist.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import types

import pytest

import asgi_router

FOUND = list(pkgutil.walk_packages(asgi_router.__path__, "asgi_router."))
MODULES = sorted(m.name for m in FOUND if not m.name.endswith(".__main__"))  # __main__ runs the CLI
PACKAGES = sorted(m.name for m in FOUND if m.ispkg)


def public_names(pkg: types.ModuleType) -> set[str]:
    """Public names ``pkg/__init__.py`` defines or re-exports from its own modules."""
    out: set[str] = set()
    for node in ast.parse(inspect.getsource(pkg)).body:
        if isinstance(node, ast.ImportFrom):
            own = node.level > 0 or (node.module or "").startswith(pkg.__name__ + ".")
            out |= {a.asname or a.name for a in node.names} if own else set()
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {t.id for t in targets if isinstance(t, ast.Name)}
    return {
        n for n in out if not n.startswith("_") and not isinstance(getattr(pkg, n, None), types.ModuleType)
    }


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    mod = importlib.import_module(name)
    exported = getattr(mod, "__all__", None)
    if exported is None:
        return
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_package_lists_every_public_name(name: str) -> None:
    pkg = importlib.import_module(name)
    if not hasattr(pkg, "__all__"):
        assert not public_names(pkg), f"{name} offers names: give it an __all__"
        return
    unlisted = public_names(pkg) - set(pkg.__all__)
    assert not unlisted, f"{name} offers {sorted(unlisted)} without listing them in __all__"


def test_package_root_is_version_only() -> None:
    assert public_names(asgi_router) == set()
    assert isinstance(asgi_router.__version__, str)
