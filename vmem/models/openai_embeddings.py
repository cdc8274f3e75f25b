"""An embedder backed by an OpenAI-compatible ``POST /embeddings`` endpoint.

Requests go through :class:`vmem.models.http_retry.JSONPoster`, the client the
model adapters use: the same retry rules, backoff and errors, one lazily
created connection pool per embedder, closed by :meth:`OpenAIEmbedder.aclose`
(or ``async with``).  This module adds only the embeddings wire format:
the request body, batching, and checking and ordering the vectors that come
back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import httpx
import msgspec

from vmem.errors import UsageError
from vmem.models.http_retry import AdapterBase, JSONPoster, Sleeper, decode_reply, malformed
from vmem.retrieval.embed import check_texts, normalize_rows

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["OpenAIEmbedder"]

_PROVIDER = "openai embeddings"
_MAX_BATCH = 256  # texts per request: keeps each one well under providers' per-request token limits


class _Item(msgspec.Struct):
    index: int
    embedding: list[float]


class _Response(msgspec.Struct):
    data: list[_Item]


_decoder = msgspec.json.Decoder(_Response)
_encoder = msgspec.json.Encoder()


class OpenAIEmbedder(AdapterBase):
    """Embeddings from an OpenAI-compatible HTTP endpoint.

    Sends ``{"model": model, "input": [...]}`` (plus ``"dimensions": dim`` when
    `dim` is given) to ``{base_url}/embeddings`` in batches of at most
    `batch_size` (<= 256) texts, with ``Authorization: Bearer <api_key>`` when
    `api_key` is given.  Vectors are put back in input order by each item's
    ``index`` and L2-normalised.

    Retries and errors are :mod:`vmem.models.http_retry`'s: a failed request
    is a :class:`~vmem.models.http_retry.ModelHTTPError`, a response that is
    not the expected JSON a :class:`~vmem.errors.ModelError` naming what is
    wrong; both name the status and the start of the body.  `sleep` is
    injectable so tests need not wait, `transport` goes to the httpx client.

    Without `dim`, the endpoint's native dimension is learned from the first
    response; :attr:`dim` raises until then.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        dim: int | None = None,
        timeout: float = 30,
        max_retries: int = 3,
        *,
        batch_size: int = _MAX_BATCH,
        sleep: Sleeper = anyio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not model:
            raise UsageError("embeddings model name must not be empty")
        if dim is not None and dim < 1:
            raise UsageError(f"embeddings dim must be positive, got {dim}")
        if not 1 <= batch_size <= _MAX_BATCH:
            raise UsageError(f"embeddings batch_size must be in 1..{_MAX_BATCH}, got {batch_size}")
        self._model = model
        self._dim = dim
        self._requested_dim = dim
        self._batch_size = batch_size
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = JSONPoster(
            provider=_PROVIDER,
            url=base_url.rstrip("/") + "/embeddings",
            headers=headers,
            timeout=timeout,
            max_retries=max_retries,
            sleep=sleep,
            transport=transport,
        )

    def __repr__(self) -> str:
        # Never the API key.
        return f"OpenAIEmbedder(url={self._http.url!r}, model={self._model!r}, dim={self._requested_dim!r})"

    @property
    def id(self) -> str:
        """``openai/<model>/<dim>``, or ``openai/<model>/native`` without `dim`.

        The URL is not part of it: the same model behind another address gives
        the same vectors, so the cache survives a move.
        """
        return f"openai/{self._model}/{self._requested_dim if self._requested_dim else 'native'}"

    @property
    def dim(self) -> int:
        """The vector length: as given, or as learned from the first response."""
        if self._dim is None:
            raise UsageError(
                f"the dimension of {self._model!r} is unknown until the first embed(); "
                f"pass dim= to OpenAIEmbedder to know it up front"
            )
        return self._dim

    @property
    def semantic(self) -> bool:
        """True: embedding models are trained so that similar meanings are near."""
        return True

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of `texts`: float32, shape (len(texts), dim), unit rows.

        Empty input sends nothing and gives shape (0, dim), or (0, 0) while
        the dimension is not yet known.
        """
        import numpy as np

        items = check_texts(texts)
        if not items:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        batches = [items[i : i + self._batch_size] for i in range(0, len(items), self._batch_size)]
        return np.concatenate([await self._embed_batch(batch) for batch in batches])

    def request_body(self, batch: Sequence[str]) -> bytes:
        """The exact JSON sent for one batch."""
        payload: dict[str, object] = {"model": self._model, "input": list(batch)}
        if self._requested_dim is not None:
            payload["dimensions"] = self._requested_dim
        return _encoder.encode(payload)

    async def _embed_batch(self, batch: list[str]) -> npt.NDArray[np.float32]:
        import numpy as np

        response = await self._http.post(self.request_body(batch))
        url = self._http.url

        def bad(detail: str) -> Exception:
            return malformed(_PROVIDER, url, response, detail)

        items = sorted(decode_reply(_decoder, response, _PROVIDER, url).data, key=lambda item: item.index)
        indices = [item.index for item in items]
        if indices != list(range(len(batch))):
            raise bad(f"expected indices 0..{len(batch) - 1}, got {indices[:10]}")
        width = len(items[0].embedding)
        if width == 0 or any(len(item.embedding) != width for item in items):
            raise bad("embeddings are empty or of different lengths")
        if self._dim is not None and width != self._dim:
            raise bad(f"embeddings have {width} dimensions, expected {self._dim}")
        matrix = np.array([item.embedding for item in items], dtype=np.float64)
        if not np.isfinite(matrix).all() or not matrix.any(axis=1).all():
            raise bad("an embedding is all zeros or not finite")
        self._dim = width
        return normalize_rows(matrix)
