"""The packer actor: renders the prompt for a turn and records its trace.

The trace (a PromptPacked event) is appended *as of* the state the prompt was
packed from (optimistic concurrency), so re-folding the log to just before the
trace and packing again yields the same bytes: replay re-renders and checks.
Packing itself is :func:`vmem.assembly.pack.pack_state`, a function of the state.
"""

from __future__ import annotations

from collections.abc import Mapping

from vmem.actors.runtime import Route
from vmem.actors.writer import Writer
from vmem.assembly.pack import Packed, pack_state, trace_event
from vmem.schemas.messages import PackReply, PackRequest
from vmem.storage.home import Home
from vmem.storage.view import Draft


class Packer:
    name = "packer"
    queue = "packer"
    concurrency = 1

    def __init__(self, home: Home, writer: Writer) -> None:
        self.home = home
        self.writer = writer

    def routes(self) -> Mapping[str, Route]:
        return {"pack": Route(self.pack, PackRequest, client=False)}

    async def pack(self, req: PackRequest) -> PackReply:
        def decide(draft: Draft) -> Packed:
            packed = pack_state(self.home.store, req.ns, draft.state, turn=req.turn, attempt=req.attempt,
                                budget=req.budget, tokenizer=req.tokenizer)
            draft.add([trace_event(req.ns, packed, turn=req.turn, attempt=req.attempt, profile=req.profile,
                                   budget=req.budget, tokenizer=req.tokenizer, candidates=req.candidates,
                                   retriever_errors=req.retriever_errors)])
            return packed

        p, result = await self.writer.commit(req.ns, decide)
        shown = tuple(b for s in p.sections for b in s.blocks if not b.startswith("~"))
        return PackReply(prompt=p.prompt, messages=p.messages, prompt_sha256=p.sha256, prompt_tokens=p.tokens,
                         resident=shown, trace_seq=result.last_seq if result else 0, turn=req.turn)
