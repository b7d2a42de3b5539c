"""Simulated LLM providers: real HTTP servers on loopback that misbehave on request.

One server speaks OpenAI (``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``) and
Anthropic (``/v1/messages``). What it answers for each model is scripted step by step; see
:mod:`asgi_router.sim.steps` for every step field. Used by ``asgi-router demo`` and by the
integration tests. ``python -m asgi_router.sim`` runs one from the command line.
"""

from .server import SimServer
from .state import SimState
from .steps import FIELDS as STEP_FIELDS
from .steps import Step, StepError, parse_script, parse_step

__all__ = ["STEP_FIELDS", "SimServer", "SimState", "Step", "StepError", "parse_script", "parse_step"]
