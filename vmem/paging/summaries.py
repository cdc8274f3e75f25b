"""Summaries as events: the summary block, its edges to what it summarises, and the commit.

Evicted document pages are summarised extractively (a pure function of the
pages, :func:`vmem.assembly.summarize.extractive_summary`), inside the same
transaction as the fault that evicted them: the summary costs less than a
job's round trip and a synced append of its own, and its place in the log is
then fixed by the decision, not by when a worker finished.  Conversation
summaries, abstractive with a model, are the compressor actor's jobs.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmem.assembly.pack import BlockSource
from vmem.assembly.summarize import extractive_summary
from vmem.assembly.tokens import get_tokenizer
from vmem.schemas.events import EdgeAdded, Event, SummaryCommitted
from vmem.schemas.messages import CompressJob
from vmem.state.blocks import make_block

COMPRESSOR_ID = "extractive-v1"


def summary_events(job: CompressJob, text: str, compressor: str) -> list[Event]:
    """The summary block, its edges to what it summarises, and the commit event."""
    summary = make_block(job.ns, "summary", "system", text,
                         {"job": job.job_id, "compressor": compressor, "scope": job.scope})
    return [
        summary,
        *(EdgeAdded(ns=job.ns, src=summary.block_id, dst=b, kind="summarizes") for b in job.sources),
        SummaryCommitted(ns=job.ns, job_id=job.job_id, summary_id=summary.block_id, sources=job.sources,
                         compressor=compressor, scope=job.scope),
    ]


def eviction_summary(source: BlockSource, ns: str, pages: Sequence[str], *, job_id: str, turn: int) -> list[Event]:
    """The extractive summary of evicted `pages` as events (none if there are no pages or no text)."""
    if not pages:
        return []
    blocks = source.get_many(ns, pages)
    texts = [blocks[b].text for b in pages if b in blocks]
    text = extractive_summary(texts, get_tokenizer("cl100k_base"))
    if not text:
        return []
    return summary_events(CompressJob(ns=ns, job_id=job_id, sources=tuple(b for b in pages if b in blocks), turn=turn),
                          text, COMPRESSOR_ID)
