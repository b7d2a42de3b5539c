"""OpenAI client → Anthropic upstream: fixture tables plus the cases a table cannot show."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.translate_support import cases, check_json_case, check_sse_case

PAIR = "openai_to_anthropic"


@pytest.mark.parametrize("path", cases(PAIR, "json"))
def test_json_case(path: Path) -> None:
    check_json_case(PAIR, path)


@pytest.mark.parametrize("path", cases(PAIR, "sse"))
def test_sse_case(path: Path) -> None:
    check_sse_case(PAIR, path)
