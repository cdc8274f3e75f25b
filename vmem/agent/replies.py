"""The reducer's pure logic: model output in, a validated outcome out.

Model output is untrusted.  Citations must name blocks that were in the
prompt; a page-fault request must name something to look for.  Anything else
becomes an error the model will see, never a state change.
"""

from __future__ import annotations

import re
from typing import Iterable, Literal

import msgspec

_FAULT = re.compile(r"^\s*PAGE_FAULT:\s*(.*)$", re.MULTILINE)
# Prompts show block ids shortened to their first 12 hex digits (a full id
# costs about 20 tokens); the model may cite either form.
_CITE = re.compile(r"\[([0-9a-f]{12,32})\]")
_BLOCK_REF = re.compile(r"#([0-9a-f]{12,32})")


def resolve(ref: str, among: Iterable[str]) -> str | None:
    """The one id in `among` that `ref` (a full id or a prefix of one) names, else None."""
    hits = [b for b in among if b.startswith(ref)]
    return hits[0] if len(hits) == 1 else None


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["answer", "fault", "error"]
    answer: str = ""
    cited: tuple[str, ...] = ()
    query: str = ""
    block_ids: tuple[str, ...] = ()
    code: str = ""
    error: str = ""
    implicit: bool = False


def reduce_text(text: str, resident: frozenset[str] | set[str], known: frozenset[str] | set[str] | None = None) -> Outcome:
    """Classify a model reply as an answer, a page-fault request, or an error.

    `resident` are the blocks the prompt showed; `known` all blocks of the
    namespace (citations of known but absent blocks are an implicit fault).
    """
    known = known if known is not None else frozenset()
    if not text.strip():
        return Outcome(kind="error", code="empty_output", error="the model returned no text")
    m = _FAULT.search(text)
    if m:
        arg = m.group(1).strip()
        refs = _BLOCK_REF.findall(arg)
        ids = tuple(dict.fromkeys(resolve(r, known) or r for r in refs))
        query = _BLOCK_REF.sub(" ", arg).strip()
        if not ids and not query:
            return Outcome(
                kind="error", code="empty_fault", error="PAGE_FAULT needs words to search for or #<block id>"
            )
        return Outcome(kind="fault", query=query, block_ids=ids)
    refs = list(dict.fromkeys(_CITE.findall(text)))
    shown = [resolve(r, resident) for r in refs]
    cited = tuple(dict.fromkeys(b for b in shown if b))
    unknown = [r for r, b in zip(refs, shown) if b is None]
    found = [resolve(r, known) for r in unknown]
    missing = tuple(b for b in found if b)
    if missing and len(missing) == len(unknown):
        # The model refers to stored blocks that were not in its prompt: an
        # implicit page fault.  Load them and let it answer from them.
        return Outcome(kind="fault", block_ids=missing, implicit=True)
    if unknown:
        return Outcome(
            kind="error",
            code="invalid_citation",
            error=f"cited blocks that were not in the prompt: {', '.join(unknown)}",
            answer=text.strip(),
            cited=cited,
        )
    return Outcome(kind="answer", answer=text.strip(), cited=cited)
