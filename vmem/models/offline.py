"""The offline model: a deterministic stand-in for an LLM, and named as one.

It is not a language model.  It reads the packed prompt the way a model
would, finds the newest user question, and answers extractively from the
pages in the prompt when one of them holds the question's words, citing that
page's block id.  Otherwise it asks vmem for a page fault.  It exists so the
whole pipeline (faults, eviction, summaries, traces, replay) runs offline and
reproducibly in the demo and the tests.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Sequence

import msgspec

from vmem.assembly.summarize import sentences
from vmem.assembly.tokens import get_tokenizer
from vmem.models.model import ModelReply, ToolSpec
from vmem.retrieval.bm25 import terms
from vmem.schemas.messages import ChatMessage, ToolCall

_SECTION = re.compile(r"^<(\w+)>\n(.*?)\n</\1>$", re.MULTILINE | re.DOTALL)
_ITEM = re.compile(r"^\[([0-9a-f]{12,32})\][^\n]*(?:\n|: )", re.MULTILINE)
_STOP = frozenset(
    "a an and are as at be by did do does for from has have how in is it its of on or that the this to "
    "was were what when where which who whom whose why will with about tell me please give".split()
)
# A page answers when it holds every name in the question (capitalised words,
# the part a wrong page most often lacks) and this share of its other terms.
COVERAGE = 0.5


def _sections(prompt: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in _SECTION.finditer(prompt)}


def _items(section: str) -> list[tuple[str, str]]:
    marks = list(_ITEM.finditer(section))
    return [
        (m.group(1), section[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(section)])
        for i, m in enumerate(marks)
    ]


def content_terms(text: str) -> set[str]:
    stop = {t for w in _STOP for t in terms(w)}
    return {t for t in terms(text) if t not in stop}


def _best_sentence(body: str, qterms: set[str]) -> str:
    # A question term that recurs all over the page (its topic) says less about
    # which sentence answers than one that appears once: weight by 1/frequency.
    everything = sentences(body)
    candidates = [s for s in everything if not s.startswith("#")] or everything
    per_sentence = [set(terms(s)) for s in candidates]
    freq = Counter(t for s in everything for t in set(terms(s)))
    scores = [sum(1.0 / freq[t] for t in qterms & ts) for ts in per_sentence]
    best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
    return candidates[best]


class OfflineModel:
    """Deterministic extractive answerer (``--model offline``); not an LLM."""

    name = "offline"

    async def complete(
        self, prompt: str, messages: Sequence[ChatMessage] = (), tools: Sequence[ToolSpec] = ()
    ) -> ModelReply:
        tok = get_tokenizer("cl100k_base")
        if tools:
            text, calls = agent_reply(prompt, messages, tools)
            out = text + "".join(c.arguments for c in calls)
            return ModelReply(text=text, tool_calls=calls, input_tokens=tok.count(prompt), output_tokens=tok.count(out), model=self.name)
        text = self.reply(prompt)
        return ModelReply(text=text, input_tokens=tok.count(prompt), output_tokens=tok.count(text), model=self.name)

    async def aclose(self) -> None:
        """Nothing to release."""

    def reply(self, prompt: str) -> str:
        secs = _sections(prompt)
        question = ""
        for line in secs.get("Recent", "").splitlines():
            if line.startswith("user: "):
                question = line[len("user: ") :]
        qterms = content_terms(question)
        if not qterms:
            return "I need a question to answer."
        names = content_terms(" ".join(w for w in re.findall(r"[\w'-]+", question) if w[:1].isupper()))
        others = qterms - names
        pages = _items(secs.get("Retrieved", "")) + _items(secs.get("Background", ""))
        best: tuple[float, str, str] | None = None
        for bid, body in pages:
            have = set(terms(body))
            if not names <= have:
                continue
            cover = len(others & have) / len(others) if others else 1.0
            if best is None or (cover, bid) > (best[0], best[1]):
                best = (cover, bid, body)
        if best is not None and best[0] >= COVERAGE:
            _cover, bid, body = best
            return f"{_best_sentence(body, qterms)} [{bid}]"
        words = [w for w in re.findall(r"[\w'-]+", question) if w.lower() not in _STOP]
        return "PAGE_FAULT: " + " ".join(words)


# -- agent mode: with tools, the offline model drives memory functions --------

_ARITH = re.compile(r"(?<![\w.])(\(?\s*-?\d+(?:\.\d+)?(?:\s*(?:\*\*|//|[-+*/%])\s*\(?\s*-?\d+(?:\.\d+)?\s*\)?)+)")
_ASKS_ARITH = re.compile(r"\b(?:what is|what's|calculate|compute|how much is)\b", re.IGNORECASE)
_NAME = re.compile(r"\bmy name is ([A-Z][\w'-]*(?: [A-Z][\w'-]*)?)", re.IGNORECASE)
_REMEMBER = re.compile(r"^(?:please )?remember(?: that)? (.+)$", re.IGNORECASE)
_SELF_FACT = re.compile(r"^(?:i live in|i work as|i am allergic to|my favou?rite [\w ]+ is|i have a|my [\w ]+ is) .+", re.IGNORECASE)
_ARCHIVE = re.compile(r"^(?:archive|note for later|save this|keep this)\s*:\s*(.+)$", re.IGNORECASE)
_RECALL = re.compile(r"^(?:what did i (?:say|tell you) about|did i mention|do you remember(?: what i said about)?) (.+?)\??$", re.IGNORECASE)
_LOOKUP = re.compile(r"^(?:what do you know about|look up|search your notes for) (.+?)\??$", re.IGNORECASE)
_DATE = re.compile(r"\bon (\d{4}-\d{2}-\d{2})\b")
_SELF_Q = re.compile(r"^(?:what(?:'s| is| are) my|where do i|what do i|who am i|do i|which [\w ]+ do i|how old am i)\b", re.IGNORECASE)
_SLOT = re.compile(r"<(\w+) version=\d+ chars=\d+/\d+[^>]*>\n(.*?)\n</\1>", re.DOTALL)


def _call(prompt: str, i: int, name: str, **arguments: object) -> ToolCall:
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:10]
    return ToolCall(id=f"call_{digest}_{i}", name=name, arguments=msgspec.json.encode(arguments).decode())


def _say(prompt: str, text: str) -> tuple[ToolCall, ...]:
    return (_call(prompt, 0, "send_message", message=text),)


def _best_line(lines: list[str], question: str) -> str:
    q = content_terms(question) - content_terms("say said tell told mention remember i me my")
    best, best_score = "", 0
    for line in lines:
        score = len(q & set(terms(line)))
        if score > best_score:
            best, best_score = line, score
    return best


class _Turn(msgspec.Struct):
    user: str
    results: list[tuple[str, str, str]]  # (function name, arguments, result) of this turn's calls
    slots: dict[str, str]


def _read_turn(messages: Sequence[ChatMessage]) -> _Turn:
    user = ""
    results: list[tuple[str, str, str]] = []
    calls: dict[str, tuple[str, str]] = {}
    for m in messages:
        if m.role == "user" and not m.content.startswith("[summary of the earlier conversation]"):
            user, results = m.content, []
        for c in m.tool_calls:
            calls[c.id] = (c.name, c.arguments)
        if m.role == "tool" and m.tool_call_id in calls:
            name, args = calls[m.tool_call_id]
            results.append((name, args, m.content))
    slots = {label: value for label, value in _SLOT.findall(messages[0].content)} if messages else {}
    return _Turn(user=user, results=results, slots=slots)


def agent_reply(prompt: str, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> tuple[str, tuple[ToolCall, ...]]:
    """What the offline model does when it has tools: rules, not a language model."""
    names = {t.name for t in tools}
    turn = _read_turn(messages)
    u = turn.user.strip()
    if turn.results:
        name, args, result = turn.results[-1]
        if result.startswith("error:"):
            return "", _say(prompt, f"Sorry, that did not work: {result[len('error:'):].strip()}")
        if name == "calculator":
            expr = msgspec.json.decode(args).get("expression", "")
            return "", _say(prompt, f"{expr} = {result}")
        if name in ("conversation_search", "conversation_search_date", "archival_memory_search"):
            lines = [ln for ln in result.splitlines()[1:] if ln.strip() and u not in ln]
            best = _best_line(lines, u) if name != "conversation_search_date" else (lines[0] if lines else "")
            return "", _say(prompt, f"I found this: {best}" if best else "I could not find anything about that.")
        if name in ("core_memory_append", "core_memory_replace"):
            return "", _say(prompt, "Got it. I will remember that.")
        if name == "archival_memory_insert":
            return "", _say(prompt, "Saved to archival memory.")
        if name == "load_profile" and "core_memory_append" in names:
            return "", (_call(prompt, 0, "core_memory_append", label="human", content=result, request_heartbeat=True),)
        return "", _say(prompt, f"{name} returned: {result}")
    m = _ARITH.search(u)
    if m and "calculator" in names and _ASKS_ARITH.search(u):
        return "", (_call(prompt, 0, "calculator", expression=m.group(1).strip()),)
    if (m := _NAME.search(u)) is not None:
        human = turn.slots.get("human", "")
        old = next((ln for ln in human.splitlines() if ln.startswith("Name: ")), "")
        if old:
            return "", (_call(prompt, 0, "core_memory_replace", label="human", old_content=old,
                              new_content=f"Name: {m.group(1)}", request_heartbeat=True),)
        return "", (_call(prompt, 0, "core_memory_append", label="human", content=f"Name: {m.group(1)}", request_heartbeat=True),)
    if (m := _REMEMBER.match(u)) is not None or _SELF_FACT.match(u):
        fact = (m.group(1) if m else u).rstrip(".!")
        return "", (_call(prompt, 0, "core_memory_append", label="human", content=fact, request_heartbeat=True),)
    if (m := _ARCHIVE.match(u)) is not None:
        return "", (_call(prompt, 0, "archival_memory_insert", content=m.group(1), request_heartbeat=True),)
    if (m := _DATE.search(u)) is not None:
        return "", (_call(prompt, 0, "conversation_search_date", start_date=m.group(1), end_date=m.group(1), request_heartbeat=True),)
    if (m := _RECALL.match(u)) is not None:
        return "", (_call(prompt, 0, "conversation_search", query=m.group(1), request_heartbeat=True),)
    if (m := _LOOKUP.match(u)) is not None:
        return "", (_call(prompt, 0, "archival_memory_search", query=m.group(1), request_heartbeat=True),)
    if "profile" in u.lower() and "load_profile" in names:
        return "", (_call(prompt, 0, "load_profile"),)
    if _SELF_Q.match(u):
        # What the user told us about themselves lives in the `human` slot.
        lines = turn.slots.get("human", "").splitlines()
        best = _best_line(lines, u)
        if best:
            return "", _say(prompt, f"From my notes: {best}")
        return "", (_call(prompt, 0, "conversation_search", query=u, request_heartbeat=True),)
    return "", _say(prompt, "Noted.")
