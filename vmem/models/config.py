"""Models configured from environment variables, for the CLI and scripts.

* ``openai``: ``OPENAI_API_KEY`` (required), ``OPENAI_BASE_URL`` (the endpoint
  including ``/v1``; default ``https://api.openai.com/v1``),
  ``VMEM_OPENAI_MODEL`` (default ``gpt-4o-mini``).  A local server (vLLM,
  llama.cpp, Ollama) that needs no key still wants a non-empty
  ``OPENAI_API_KEY``; any value does.
* ``anthropic``: ``ANTHROPIC_API_KEY`` (required), ``ANTHROPIC_BASE_URL``
  (default ``https://api.anthropic.com``), ``VMEM_ANTHROPIC_MODEL`` (default
  ``claude-sonnet-4-5``).

An empty variable counts as unset.  Nothing is read or built at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from vmem.errors import UsageError
from vmem.models.anthropic import AnthropicModel
from vmem.models.model import Model
from vmem.models.openai import OpenAIChatModel

__all__ = ["KINDS", "model_from_env"]

KINDS = ("openai", "anthropic")


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name) or default


def _required(env: Mapping[str, str], name: str, kind: str, hint: str = "") -> str:
    value = env.get(name)
    if not value:
        raise UsageError(f"the {kind} model needs an API key: set the {name} environment variable{hint}")
    return value


def model_from_env(kind: str, env: Mapping[str, str] | None = None) -> Model:
    """An adapter of `kind` ("openai" or "anthropic") configured from `env` (default os.environ).

    Raises UsageError for an unknown kind or a missing API key, naming the
    variable to set.
    """
    env = os.environ if env is None else env
    if kind == "openai":
        return OpenAIChatModel(
            _get(env, "OPENAI_BASE_URL", "https://api.openai.com/v1"),
            _get(env, "VMEM_OPENAI_MODEL", "gpt-4o-mini"),
            api_key=_required(env, "OPENAI_API_KEY", kind, " (any value for a local server that needs none)"),
        )
    if kind == "anthropic":
        return AnthropicModel(
            _get(env, "VMEM_ANTHROPIC_MODEL", "claude-sonnet-4-5"),
            api_key=_required(env, "ANTHROPIC_API_KEY", kind),
            base_url=_get(env, "ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
        )
    raise UsageError(f"unknown model kind {kind!r}; use one of: {', '.join(KINDS)}")
