"""The packer's and the pager's decisions run again, for replay (re-render, re-decide)."""

from __future__ import annotations

from vmem.assembly.pack import BlockSource, pack_state
from vmem.paging.decisions import decide_fault
from vmem.schemas.events import PageFaultResolved, PromptPacked
from vmem.schemas.messages import Candidate
from vmem.state.fold import State
from vmem.storage.replay import Decided


class PagerChecks:
    """:class:`vmem.storage.replay.Checks` with the actors' own functions, reading blocks from `source`."""

    def __init__(self, source: BlockSource) -> None:
        self.source = source

    def render(self, ns: str, state: State, trace: PromptPacked) -> str:
        packed = pack_state(self.source, ns, state, turn=trace.turn, attempt=trace.attempt, budget=trace.budget,
                            tokenizer=trace.tokenizer)
        return packed.sha256

    def decide(self, ns: str, state: State, resolved: PageFaultResolved) -> Decided:
        # The candidates and scores the decision recorded: retrieval reads indexes that
        # have grown since, so its results are recorded, not recomputed.
        candidates = tuple(Candidate(c.block_id, c.fused, c.scores) for c in resolved.candidates if c.scores or c.fused)
        _events, sel = decide_fault(
            self.source, ns, state, fault_id=resolved.fault_id, turn=resolved.turn, attempt=resolved.attempt,
            budget=resolved.budget, tokenizer=resolved.tokenizer, candidates=candidates, explicit=resolved.explicit,
            policy=resolved.policy, query=resolved.query, source_kind="pager", raise_event=False,  # type: ignore[arg-type]
        )
        # The passages of what it loads: a resident passage kept as it was has no event.
        return Decided(sel.load, sel.evict, {b: sel.passages[b] for b in sel.load if b in sel.passages})
