"""A namespace view tells its listeners what it folds, once, in order: followers of the log need not read it again."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmem.actors.retriever import _Bm25
from vmem.retrieval.bm25 import Bm25Index
from vmem.schemas.messages import StoredEvent
from vmem.state.blocks import make_block
from vmem.storage.home import Home
from vmem.storage.view import Draft

pytestmark = pytest.mark.anyio
NS = "t/a"


def pages(*texts: str):
    return [make_block(NS, "page", "document", t, {"page": str(i)}) for i, t in enumerate(texts)]


async def test_listeners_hear_what_is_read_and_what_is_settled_with_consecutive_positions(tmp_path: Path):
    home = Home.init(tmp_path / "home")
    try:
        view = home.view(NS)
        heard: list[tuple[int, list[int], int]] = []
        view.watch(lambda before, events, after: heard.append((before, [s.seq for s in events], after)))
        first = await home.log.append(NS, pages("lamp", "tower"))
        await view.catch_up()  # read from the log
        draft = Draft(view)
        draft.add(pages("fog"))
        second = await home.log.append(NS, draft.events, expected_last=view.pos)
        view.settle(draft.events, second.last_seq)  # told without a read
        assert heard == [(0, [first.first_seq, first.last_seq], first.last_seq),
                         (first.last_seq, [second.first_seq], second.last_seq)]
    finally:
        await home.aclose()


async def test_a_tail_index_fed_by_its_view_skips_what_it_heard_before_a_reset(tmp_path: Path):
    home = Home.init(tmp_path / "home")
    try:
        (tmp_path / "bm25").mkdir()
        bm25 = _Bm25(Bm25Index.open(tmp_path / "bm25"))
        view = home.view(NS)
        view.watch(bm25.follow)
        await home.log.append(NS, pages("lamp", "tower", "fog"))
        await view.catch_up()
        assert len(bm25.tail) == 3 and bm25.tail_pos == view.pos
        view.reset()  # folds from an earlier position again
        await view.catch_up()
        assert len(bm25.tail) == 3
        # A batch past a gap is not taken: the next search reads the gap from the log.
        bm25.follow(view.pos + 5, [StoredEvent(view.pos + 6, pages("reef")[0])], view.pos + 6)
        assert len(bm25.tail) == 3
        bm25.index.close()
    finally:
        await home.aclose()


async def test_a_long_vector_tail_is_saved_so_a_new_process_does_not_embed_it_again(tmp_path: Path, handbook_file: Path,
                                                                                       monkeypatch):
    import vmem.actors.retriever as retriever
    from vmem import Vmem
    from vmem.retrieval.embed import HashingEmbedder

    class Counting(HashingEmbedder):
        texts = 0

        async def embed(self, texts):
            Counting.texts += len(texts)
            return await super().embed(texts)

    monkeypatch.setattr(retriever, "TAIL_SAVE", 4)
    questions = [f"What is the radio callsign of station number {i}?" for i in range(8)]
    async with Vmem.open(tmp_path / "home", create=True, embedder=Counting()) as vm:
        await vm.ingest(NS, handbook_file)
        for q in questions:
            await vm.ask(NS, q, budget=800)
    Counting.texts = 0
    async with Vmem.open(tmp_path / "home", embedder=Counting()) as vm:
        await vm.ask(NS, "Who is the principal keeper of Cape Wrath?", budget=800)
    # The query, and what was written since the last save (fewer than TAIL_SAVE, plus the last turn's
    # question and answer, written after its search), not the sixteen messages of the eight turns.
    assert Counting.texts <= 1 + 3 + 2 + 2, Counting.texts
