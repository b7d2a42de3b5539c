"""Secret references → :class:`Secret` values. The only code that reads ``os.environ`` or secret files.

A secret field (``providers.*.api_keys`` entries, ``server.admin_key``, ``keys.*.key``) holds a
reference, ``env:NAME`` or ``file:PATH`` (relative to router.toml's folder), never the secret
itself. Errors name the reference and the place, never a value: a literal string in a secret
field is reported without echoing it, since it probably *is* a secret.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

from asgi_router.config.schema import ConfigSpec
from asgi_router.config.source import Problems, Where
from asgi_router.types import Secret

NOT_A_REFERENCE = "secrets must be references: env:NAME or file:PATH"


class SecretError(Exception):
    """A reference that cannot be resolved; the message names the reference, never a value."""


def parse_ref(value: str) -> tuple[Literal["env", "file"], str] | None:
    """``"env:NAME"`` → ``("env", "NAME")``; None when ``value`` is not a reference."""
    scheme, sep, target = value.partition(":")
    if sep and scheme in ("env", "file"):
        return ("env" if scheme == "env" else "file"), target.strip()
    return None


def is_ref(value: str) -> bool:
    return parse_ref(value) is not None


def resolve(ref: str, env: Mapping[str, str] | None, base_dir: Path) -> Secret:
    """The secret behind ``ref``; ``env`` defaults to ``os.environ``. Raises :class:`SecretError`."""
    parsed = parse_ref(ref)
    if parsed is None:
        raise SecretError(NOT_A_REFERENCE)
    kind, target = parsed
    if not target:
        raise SecretError(f"{ref!r} names no {'variable' if kind == 'env' else 'file'}")
    if kind == "env":
        environ = os.environ if env is None else env
        value = environ.get(target)
        if value is None:
            raise SecretError(f"environment variable {target} is not set ({ref})")
    else:
        path = base_dir / target
        try:
            value = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise SecretError(f"cannot read {ref} ({path}): {reason}") from None
    value = value.strip()
    if not value:
        raise SecretError(f"{ref} is empty")
    return Secret(ref, value)


def secret_fields(spec: ConfigSpec) -> Iterator[tuple[Where, str, str]]:
    """Every secret field in the spec as (table, key, the value written there)."""
    for provider in spec.providers:
        for value in provider.api_keys or ():
            yield ("providers", provider.name), "api_keys", value
    if spec.server.admin_key is not None:
        yield ("server",), "admin_key", spec.server.admin_key
    for key in spec.keys:
        if key.key is not None:
            yield ("keys", key.name), "key", key.key


def resolve_spec(
    spec: ConfigSpec, env: Mapping[str, str] | None, base_dir: Path, problems: Problems
) -> dict[str, Secret]:
    """Resolve every reference in the spec: reference → Secret. Failures go to ``problems``
    (once per place the reference is used) and are left out of the result."""
    found: dict[str, Secret] = {}
    failed: dict[str, str] = {}
    for table, key, ref in secret_fields(spec):
        if not is_ref(ref):
            problems.add(table, key, NOT_A_REFERENCE)
            continue
        if ref not in found and ref not in failed:
            try:
                found[ref] = resolve(ref, env, base_dir)
            except SecretError as exc:
                failed[ref] = str(exc)
        if ref in failed:
            problems.add(table, key, failed[ref])
    return found
