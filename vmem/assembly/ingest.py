"""Ingest: a text file becomes pages (blocks), chained by `follows` edges.

The client side (:func:`ingest_requests`) checks the file and streams it
through the splitter into batches of pages, each an
:class:`~vmem.schemas.messages.IngestRequest`; the memory actor turns a batch
into events (:func:`ingest_events`), computing every block id itself.  A
batch carries the document's id (its content hash) and its number, so an
interrupted ingest run again commits each batch once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from vmem.assembly.split import split_pages
from vmem.assembly.text_input import check_text_file, iter_lines
from vmem.assembly.tokens import Tokenizer
from vmem.errors import UsageError
from vmem.schemas.events import DocumentIngested, EdgeAdded, Event
from vmem.schemas.messages import MAX_PAGES, IngestRequest, PageIn
from vmem.state.blocks import make_block
from vmem.state.fold import State

BATCH_PAGES = 500
DEFAULT_PAGE_TOKENS = 256
BATCH_BYTES = 4 * 2**20  # a batch stays well under the bus's payload limit (8 MB on NATS)


class Batch(msgspec.Struct, frozen=True):
    """One request of an ingest, and how far into the file it reaches."""

    request: IngestRequest
    bytes_read: int


def page_attrs(doc_id: str, source: str, page_no: int, heading: str) -> dict[str, str]:
    attrs = {"doc": doc_id, "page": str(page_no), "source": source}
    if heading:
        attrs["heading"] = heading
    return attrs


def ingest_requests(
    ns: str,
    path: Path,
    tokenizer: Tokenizer,
    *,
    page_tokens: int = DEFAULT_PAGE_TOKENS,
    max_bytes: int,
) -> Iterator[Batch]:
    """Validate `path`, then yield its pages as ingest requests (bounded memory)."""
    info = check_text_file(path, max_bytes)
    doc_id = info.sha256[:16]
    source = path.name[:256]
    read = [0]

    def counted_lines() -> Iterator[str]:
        for line in iter_lines(path):
            read[0] += len(line)
            yield line

    pages: list[PageIn] = []
    size = 0
    batch_no = 0
    first_page = 1
    n = 0
    for page in split_pages(counted_lines(), page_tokens, tokenizer):
        n += 1
        pages.append(PageIn(page.text, page.heading))
        size += len(page.text)
        if len(pages) >= min(BATCH_PAGES, MAX_PAGES) or size >= BATCH_BYTES:
            yield Batch(IngestRequest(ns=ns, doc_id=doc_id, source=source, batch=batch_no, first_page=first_page,
                                      pages=tuple(pages)), min(read[0], info.size))
            batch_no += 1
            first_page = n + 1
            pages, size = [], 0
    final = IngestRequest(ns=ns, doc_id=doc_id, source=source, batch=batch_no, first_page=first_page,
                          pages=tuple(pages), final=True, total_pages=n, bytes=info.size)
    yield Batch(final, info.size)


def ingest_events(state: State, req: IngestRequest) -> list[Event]:
    """The events of one ingest batch: its pages as blocks, `follows` edges, and (last) the document.

    Batches must arrive in order: a batch continues the page before its first
    page, which an earlier batch wrote.
    """
    ns = req.ns
    prev = ""
    if req.first_page > 1:
        prev = _page_id(state, req.doc_id, req.first_page - 1)
        if not prev:
            raise UsageError(
                f"ingest of document {req.doc_id} into {ns}: batch {req.batch} starts at page {req.first_page} but "
                f"page {req.first_page - 1} was never written; send the batches in order"
            )
    events: list[Event] = []
    first = _page_id(state, req.doc_id, 1)
    for i, page in enumerate(req.pages):
        block = make_block(ns, "page", "document", page.text, page_attrs(req.doc_id, req.source, req.first_page + i, page.heading))
        events.append(block)
        if prev:
            events.append(EdgeAdded(ns=ns, src=block.block_id, dst=prev, kind="follows"))
        prev = block.block_id
        first = first or block.block_id
    if req.final:
        last_page = req.first_page + len(req.pages) - 1
        if req.total_pages != last_page:
            raise UsageError(f"ingest of document {req.doc_id}: the last batch says {req.total_pages} pages but ends at page {last_page}")
        events.append(DocumentIngested(ns=ns, doc_id=req.doc_id, source=req.source, pages=req.total_pages,
                                       first=first, last=prev, bytes=req.bytes))
    return events


def _page_id(state: State, doc_id: str, page_no: int) -> str:
    """The block of page `page_no` of a document, "" if it is not written: looked up from the newest block back."""
    for bid in reversed(state.order):
        meta = state.blocks[bid]
        if meta.doc == doc_id and meta.page == page_no:
            return bid
        if meta.doc == doc_id and meta.page < page_no:
            return ""
    return ""
