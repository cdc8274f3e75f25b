"""Model profiles: how many tokens a model accepts and how it counts them."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType

import msgspec

from vmem.errors import BudgetError, UsageError

# Output tokens held back by `profile_for_budget`; enough for a short answer
# while keeping the window close to what the caller asked for.
DEFAULT_RESERVED_OUTPUT = 256
DEFAULT_BUDGET = 2048  # prompt tokens, where a caller gives neither a budget nor a profile

# Below this a prompt cannot hold the mandatory parts (instructions, the
# question, page headers) plus any page content worth paging in.
MIN_BUDGET = 64


class ModelProfile(msgspec.Struct, frozen=True):
    """A model's context window, its reserved output, and its tokenizer.

    `budget` (window minus reserved output) is what the packer may fill with
    prompt tokens.
    """

    name: str
    window: int
    reserved_output: int
    tokenizer: str = "cl100k_base"
    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in ("window", "reserved_output"):
            value = getattr(self, field)
            # msgspec does not type-check on construction; bool is an int
            # subclass but True as a window is surely a mistake.
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(
                    f"model profile {self.name!r}: {field} must be an integer, "
                    f"got {value!r}"
                )
        if self.window <= 0:
            raise UsageError(
                f"model profile {self.name!r}: window must be positive, got {self.window}; "
                f"set it to the model's context length in tokens"
            )
        if self.reserved_output < 0:
            raise UsageError(
                f"model profile {self.name!r}: reserved_output must be >= 0, "
                f"got {self.reserved_output}"
            )
        if self.reserved_output >= self.window:
            raise UsageError(
                f"model profile {self.name!r}: reserved_output ({self.reserved_output}) must "
                f"be smaller than window ({self.window}), or no prompt token would fit; "
                f"lower reserved_output or raise window"
            )

    @property
    def budget(self) -> int:
        """Prompt tokens available: window minus reserved output."""
        return self.window - self.reserved_output


def profile_for_budget(budget: int, name: str = "offline") -> ModelProfile:
    """A profile whose `budget` is exactly `budget` prompt tokens.

    Raises BudgetError if `budget` is below the minimum of 64 tokens.
    """
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise UsageError(f"budget must be an integer number of tokens, got {budget!r}")
    if budget < MIN_BUDGET:
        raise BudgetError(
            f"budget of {budget} tokens is too small: the minimum is {MIN_BUDGET} tokens; "
            f"pass a budget of at least {MIN_BUDGET}"
        )
    return ModelProfile(
        name=name,
        window=budget + DEFAULT_RESERVED_OUTPUT,
        reserved_output=DEFAULT_RESERVED_OUTPUT,
    )


@functools.cache
def builtin_profiles() -> Mapping[str, ModelProfile]:
    """The built-in profiles by name, read-only (the mapping is shared per process)."""
    profiles = (
        # A small window for offline runs and tests: big enough for real
        # pages, small enough that paging actually happens.
        ModelProfile(name="offline", window=8192, reserved_output=1024),
        ModelProfile(name="gpt-4o-mini", window=128_000, reserved_output=4096),
        ModelProfile(name="claude-sonnet", window=200_000, reserved_output=8192),
    )
    return MappingProxyType({p.name: p for p in profiles})


def get_profile(name: str) -> ModelProfile:
    """The built-in profile called `name`; UsageError naming the known ones if none."""
    profiles = builtin_profiles()
    try:
        return profiles[name]
    except (KeyError, TypeError):
        raise UsageError(
            f"unknown model profile {name!r}: known profiles are "
            f"{', '.join(sorted(profiles))}; or give an explicit token budget"
        ) from None
