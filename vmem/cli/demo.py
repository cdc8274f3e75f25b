"""`vmem demo`: the main job, offline, in one process, with nothing to start.

It writes a generated handbook (a sample document, at least 20 times the
prompt budget), ingests it, asks questions whose answers sit on pages that are
not resident, so the offline model faults them in, the pager evicts older
pages and the compressor summarises them, and finally replays the log.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec

from vmem.assembly.tokens import get_tokenizer
from vmem.client.client import Client
from vmem.client.sample import handbook

NS = "demo/handbook"

QUESTIONS = (
    ("What is the radio callsign of Gannet Point station?", True),
    ("Who is the principal keeper of Cape Wrath?", True),
    ("What hazard should mariners beware of near Sumburgh?", True),
    ("When was Ailsa Craig lighthouse first lit?", True),
    ("What is the radio callsign of Gannet Point station?", True),
    ("Which lamp produces the light at Hound Rock?", False),
)


DEMO_BUDGET = 1024  # small enough that the handbook (over 20x larger) must be paged


async def run_demo(vm: Client, *, home: Path, budget: int, json_out: bool) -> int:
    """Ingest the handbook into `home`'s namespace demo/handbook, ask, replay; print what happens."""
    say = (lambda *a: None) if json_out else (lambda *a: print(*a, flush=True))
    report: dict[str, Any] = {"ns": NS, "budget": budget, "turns": []}
    doc = home / "demo-handbook.md"
    text = handbook()
    doc.write_text(text, encoding="utf-8")
    doc_tokens = get_tokenizer("cl100k_base").count(text)
    say("== vmem demo (embedded, offline model: a deterministic stand-in, not an LLM) ==")
    report["embedder"] = embedder = await vm.embedder(NS)
    say(f"home {home}; namespace {NS}; prompt budget {budget} tokens; embedder {embedder}")
    ing = await vm.ingest(NS, doc)
    say(f"ingested {doc.name}: {doc_tokens} tokens ({doc_tokens / budget:.1f}x the budget) -> {ing.pages} pages")
    report["document_tokens"] = doc_tokens
    report["ingest"] = msgspec.to_builtins(ing)
    evicted_before: set[str] = set()
    for q, prefetch in QUESTIONS:
        r = await vm.ask(NS, q, budget=budget, prefetch=prefetch)
        report["turns"].append(msgspec.to_builtins(r))
        mode = "" if prefetch else "   (demand paging: the pager does not prefetch; the model faults)"
        say(f"\n[turn {r.turn}] user: {q}{mode}")
        say(f"  answer: {r.answer}")
        say(
            f"  {r.attempts} attempt(s), {r.faults} page fault(s), loaded {len(r.loaded)}, evicted {r.evictions}, "
            f"summaries {len(r.summaries)}; prompt {r.prompt_tokens}/{budget} tokens, sha256 {r.prompt_sha256[:16]}"
        )
        reloaded = [b for b in r.loaded if b in evicted_before]
        if reloaded:
            say(f"  reloaded in full after an earlier eviction: {', '.join(b[:12] for b in reloaded)}")
        evicted_before.update(r.evicted)
        for sid in r.summaries:
            s = await vm.block(NS, sid)
            say(f"  summary {sid[:12]} of {len(s.text)} chars: {s.text[:110]}...")
    rep = await vm.replay(NS, verify=True)
    report["replay"] = msgspec.to_builtins(rep)
    say(f"\nreplay: {rep.events} events, state hash {rep.state_hash[:16]}, live {rep.live_state_hash[:16]}: "
        f"{'equal' if rep.equal else 'NOT EQUAL'}; {rep.prompts_equal}/{rep.prompts_checked} prompts re-packed byte-identical")
    totals = {k: sum(t[k] for t in report["turns"]) for k in ("faults", "evictions")}
    totals["summaries"] = sum(len(t["summaries"]) for t in report["turns"])
    report["totals"] = totals
    say(f"totals: {totals['faults']} faults, {totals['evictions']} evictions, {totals['summaries']} summaries")
    if json_out:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    ok = rep.equal and totals["faults"] > 0 and totals["evictions"] > 0 and totals["summaries"] > 0
    return 0 if ok else 1
