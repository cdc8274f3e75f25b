"""The compressor actor: turns evicted pages or flushed messages into a summary, committed once.

Jobs arrive on ``vmem.<tenant>.<agent>.compressor.job`` in the queue group
``compressors``, so any number of workers share them.  The commit carries the
idempotency key ``compress:<job id>``: a redelivered or retried job produces
exactly one summary (and reports the one committed first).  The sources stay
in the store, reloadable by id.

With a model, conversation summaries are abstractive (about 10:1); without
one, extractive and deterministic.  The pager summarises the pages a fault
evicts itself, in the fault's own transaction (vmem.paging.summaries); a job
for evicted pages (a pipeline may submit one) is still done here.  A conversation
summary is recursive: it is written from the previous summary plus the
flushed messages, and points to both.  If summarising fails the job fails:
nothing is committed, and the queue it came from stays as it was.
"""

from __future__ import annotations

from collections.abc import Mapping

from vmem.actors.runtime import Route
from vmem.actors.writer import Writer
from vmem.assembly.summarize import RATIO, extractive_summary
from vmem.assembly.tokens import get_tokenizer
from vmem.errors import ModelError, UnknownBlock
from vmem.models.model import Model
from vmem.paging.summaries import COMPRESSOR_ID, summary_events
from vmem.schemas.events import (
    BlockWritten,
    ErrorRaised,
    SummaryCommitted,
)
from vmem.schemas.messages import ChatMessage, CompressDone, CompressJob
from vmem.storage.home import Home
from vmem.storage.view import Draft

SUMMARY_INSTRUCTIONS = (
    "Summarise the conversation below for your own memory. Keep names, numbers, dates, decisions and "
    "commitments; drop pleasantries. Write at most {words} words of plain prose."
)


class Compressor:
    name = "compressor"
    queue = "compressors"

    def __init__(self, home: Home, writer: Writer, *, concurrency: int = 1, model: Model | None = None) -> None:
        self.home = home
        self.writer = writer
        self.concurrency = concurrency
        self.model = model

    def routes(self) -> Mapping[str, Route]:
        return {"job": Route(self.job, CompressJob, client=False)}

    async def _abstractive(self, texts: list[str]) -> str:
        assert self.model is not None
        tok = get_tokenizer("cl100k_base")
        words = max(20, sum(tok.count(t) for t in texts) // RATIO)
        instructions = SUMMARY_INSTRUCTIONS.format(words=words)
        body = "\n\n".join(texts)
        reply = await self.model.complete(
            f"{instructions}\n\n{body}",
            (ChatMessage(role="system", content=instructions), ChatMessage(role="user", content=body)),
        )
        if not reply.text.strip():
            raise ModelError(f"{self.model.name} returned an empty summary")
        return reply.text.strip()

    async def job(self, req: CompressJob) -> CompressDone:
        await self.home.view(req.ns).catch_up()
        blocks = self.home.store.get_many(req.ns, req.sources)
        missing = [b for b in req.sources if b not in blocks]
        if missing:
            raise UnknownBlock(f"compress job {req.job_id}: blocks not in {req.ns}: {', '.join(missing)}")
        texts = [_as_text(blocks[b]) for b in req.sources]
        if req.scope == "conversation" and self.model is not None:
            text, compressor = await self._abstractive(texts), f"model:{self.model.name}"
        else:
            text, compressor = extractive_summary(texts, get_tokenizer("cl100k_base")), COMPRESSOR_ID
        events = summary_events(req, text, compressor)
        summary_id = events[0].block_id  # type: ignore[attr-defined]

        def decide(draft: Draft) -> None:
            if summary_id not in draft.state.summaries:  # committed by an earlier delivery
                draft.add(events)

        # Unconditional: a summary's events fold the same whatever came before
        # them, and at most once (content-addressed block, deduplicated edge,
        # a second SummaryCommitted of one summary is a no-op), so workers
        # compressing into one namespace need not take turns.
        _out, result = await self.writer.commit(req.ns, decide, key=f"compress:{req.job_id}", conditional=False)
        if result is None:  # this very summary was committed before
            return CompressDone(job_id=req.job_id, summary_id=summary_id, duplicate=True)
        if not result.duplicate:
            return CompressDone(job_id=req.job_id, summary_id=summary_id)
        # A retry: report the summary that was committed the first time.
        first = await self.home.log.read(req.ns, after=result.first_seq - 1, limit=result.last_seq - result.first_seq + 1)
        committed = next(s.event.summary_id for s in first if isinstance(s.event, SummaryCommitted))
        return CompressDone(job_id=req.job_id, summary_id=committed, duplicate=True)


    async def dead(self, job: CompressJob, reason: str, deliveries: int) -> None:
        """Record that a job was given up after `deliveries` deliveries (a poison job), in its namespace."""
        turn = self.home.view(job.ns).state.turn
        await self.writer.append(job.ns, [ErrorRaised(
            ns=job.ns, turn=turn, where="compressor.job", code="dead_letter",
            message=f"compress job {job.job_id} given up after {deliveries} deliveries: {reason}"[:1000],
        )], key=f"dead:{job.job_id}")


def _as_text(b: BlockWritten) -> str:
    if b.kind == "message":
        return f"{b.role}: {b.text}"
    if b.kind == "summary":
        return f"(earlier) {b.text}"
    return b.text
