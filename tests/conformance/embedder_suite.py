"""Conformance tests every :class:`vmem.retrieval.embed.Embedder` must pass.

Subclass :class:`EmbedderConformance` in a test module that provides an
``embedder`` fixture (a fresh embedder of known dimension, closed by the
fixture afterwards) and an ``anyio_backend`` fixture, and set ``semantic``
to what the embedder must say it is.  The tests use only the Embedder
interface; vectors are compared with a float32-noise tolerance where a model
may batch differently (never for repeating the same call, which must give
the very same vectors).
"""

from __future__ import annotations

import anyio
import numpy as np
import pytest

from vmem.errors import UsageError
from vmem.retrieval.embed import Embedder

TEXTS = [
    "The pager evicts the least recently used block when memory is tight.",
    "When memory is tight the pager evicts the least recently used block.",
    "Quarterly revenue grew by twelve percent.",
    "",
    "Ünïcödé wörds, digits 42, snake_case_names and 中文字符",
    "a",
    " ".join(["a longer text about keepers, stations and the weather at dawn"] * 5),
]
# More texts than one request of the HTTP embedder carries (256).
MANY = [f"note {i} from the keeper of station {i % 17}" for i in range(260)]
# Float32 rounding differs with batch shape (BLAS); anything more is a bug.
NOISE = 1e-5


class EmbedderConformance:
    """The behaviour shared by every Embedder; subclass it with an ``embedder`` fixture."""

    pytestmark = pytest.mark.anyio
    semantic: bool  # what `embedder.semantic` must be

    async def test_is_an_embedder_and_says_what_it_is(self, embedder: Embedder) -> None:
        assert isinstance(embedder, Embedder)
        assert isinstance(embedder.id, str) and embedder.id
        assert isinstance(embedder.dim, int) and embedder.dim > 0
        assert embedder.semantic is self.semantic

    async def test_shape_dtype_and_unit_rows(self, embedder: Embedder) -> None:
        v = await embedder.embed(TEXTS)
        assert isinstance(v, np.ndarray)
        assert v.shape == (len(TEXTS), embedder.dim) and v.dtype == np.float32
        assert np.isfinite(v).all()
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=NOISE)

    async def test_empty_input_gives_no_rows(self, embedder: Embedder) -> None:
        for empty in ([], ()):
            v = await embedder.embed(empty)
            assert v.shape == (0, embedder.dim) and v.dtype == np.float32

    async def test_the_same_input_gives_the_same_vectors(self, embedder: Embedder) -> None:
        first = await embedder.embed(TEXTS)
        assert np.array_equal(await embedder.embed(TEXTS), first)
        assert np.array_equal(await embedder.embed(tuple(TEXTS)), first)  # any sequence

    async def test_rows_follow_the_input_order(self, embedder: Embedder) -> None:
        forward = await embedder.embed(TEXTS)
        backward = await embedder.embed(TEXTS[::-1])
        np.testing.assert_allclose(backward[::-1], forward, atol=NOISE)
        twice = await embedder.embed([TEXTS[0], TEXTS[2], TEXTS[0]])
        np.testing.assert_allclose(twice[0], twice[2], atol=NOISE)
        assert not np.allclose(twice[0], twice[1], atol=0.01)  # different texts, different vectors

    async def test_a_row_does_not_depend_on_its_batch(self, embedder: Embedder) -> None:
        together = await embedder.embed(TEXTS)
        alone = np.vstack([await embedder.embed([t]) for t in TEXTS])
        np.testing.assert_allclose(together, alone, atol=NOISE)

    async def test_a_large_batch(self, embedder: Embedder) -> None:
        v = await embedder.embed(MANY)
        assert v.shape == (len(MANY), embedder.dim) and v.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=NOISE)
        ends = await embedder.embed([MANY[0], MANY[-1]])
        np.testing.assert_allclose(v[[0, -1]], ends, atol=NOISE)

    async def test_concurrent_calls_get_their_own_vectors(self, embedder: Embedder) -> None:
        batches = [TEXTS, TEXTS[::-1], MANY[:40], [TEXTS[2]]]
        alone = [await embedder.embed(b) for b in batches]
        together: dict[int, np.ndarray] = {}

        async def run(i: int) -> None:
            together[i] = await embedder.embed(batches[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(batches)):
                tg.start_soon(run, i)
        for i, expected in enumerate(alone):
            np.testing.assert_allclose(together[i], expected, atol=NOISE)

    async def test_a_lone_string_or_a_non_string_is_a_usage_error(self, embedder: Embedder) -> None:
        with pytest.raises(UsageError, match="single string"):
            await embedder.embed("a text")
        for bad in (["ok", 3], ["ok", None], [b"bytes"]):
            with pytest.raises(UsageError, match="must be str"):
                await embedder.embed(bad)  # type: ignore[arg-type]
        assert (await embedder.embed(["still works"])).shape == (1, embedder.dim)

    async def test_identity_is_stable(self, embedder: Embedder) -> None:
        before = (embedder.id, embedder.dim, embedder.semantic)
        await embedder.embed(TEXTS)
        assert (embedder.id, embedder.dim, embedder.semantic) == before
        await embedder.aclose()
        assert (embedder.id, embedder.dim, embedder.semantic) == before

    async def test_aclose_is_idempotent_and_a_later_embed_reopens(self, embedder: Embedder) -> None:
        first = await embedder.embed(TEXTS[:3])
        await embedder.aclose()
        await embedder.aclose()
        assert np.array_equal(await embedder.embed(TEXTS[:3]), first)
        await embedder.aclose()
