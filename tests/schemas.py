"""Validation of gateway output against OpenAI's published schemas (shared/reference)."""

from __future__ import annotations

from typing import Any

from tests.unit.translate_support import validate_openai


def validate(schema: str, obj: Any) -> None:
    validate_openai(obj, schema)
