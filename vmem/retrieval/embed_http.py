"""An embedder backed by an OpenAI-compatible ``POST /embeddings`` endpoint.

Design: the protocol logic (request body, retry and backoff decisions,
response validation) is one plain generator per batch, :meth:`_plan`, that
yields what to do next (send this body, or sleep this long) and receives what
happened (a response or a transport error).  It does no I/O, so it is tested
and reasoned about on its own.  Two thin loops drive it: :meth:`embed` with a
blocking :class:`httpx.Client` and ``sleep``, :meth:`embed_async` with an
:class:`httpx.AsyncClient` and ``async_sleep`` (anyio, so asyncio and trio both
work).  One copy of the logic, no sync wrapper around async code or the
reverse, no thread hopping.

Clients are the caller's to own: pass ``client=``/``async_client=`` to reuse
connections across calls (and close them yourself); otherwise each call opens
one client for all its batches and closes it before returning.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import msgspec

from vmem.errors import ModelError, UsageError
from vmem.models.http_retry import retry_after
from vmem.retrieval.embed import check_texts, normalize_rows

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["EmbeddingRequestError", "OpenAIEmbedder"]

_MAX_BATCH = 256
_SNIPPET = 200  # characters of a response body quoted in an error
_RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx


class EmbeddingRequestError(ModelError):
    """An embeddings request failed; `status` is the last HTTP status, or None."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Item(msgspec.Struct):
    index: int
    embedding: list[float]


class _Response(msgspec.Struct):
    data: list[_Item]


_decoder = msgspec.json.Decoder(_Response)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class _Send:
    body: bytes


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


_Step = _Send | _Sleep
_Reply = httpx.Response | httpx.TransportError | None


async def _anyio_sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


def _snippet(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    return text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else "") or "(empty body)"


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible HTTP endpoint.

    Sends ``{"model": model, "input": [...]}`` (plus ``"dimensions": dim`` when
    `dim` is given) to ``{base_url}/embeddings`` in batches of at most
    `batch_size` (<= 256) texts, with ``Authorization: Bearer <api_key>`` when
    `api_key` is given.  Vectors are put back in input order by each item's
    ``index`` and L2-normalised.

    HTTP 408, 429 and 5xx, and transport errors (connect, read, timeout),
    are retried up to `max_retries` times, waiting ``backoff * 2**attempt``
    seconds (at most `max_backoff`), or what the ``Retry-After`` header says
    (at most `max_retry_after`).  Other failures, and a response that is not
    the expected JSON, raise :class:`EmbeddingRequestError` (a
    :class:`~vmem.errors.ModelError`) at once, naming the status and the start
    of the body.  `sleep` and `async_sleep` are injectable so tests need not wait.

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
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = _anyio_sleep,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"embeddings base_url must be an http(s) URL, got {base_url!r}")
        if not model:
            raise UsageError("embeddings model name must not be empty")
        if dim is not None and dim < 1:
            raise UsageError(f"embeddings dim must be positive, got {dim}")
        if not 1 <= batch_size <= _MAX_BATCH:
            raise UsageError(f"embeddings batch_size must be in 1..{_MAX_BATCH}, got {batch_size}")
        if max_retries < 0:
            raise UsageError(f"max_retries must be >= 0, got {max_retries}")
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._dim = dim
        self._requested_dim = dim
        self._timeout = httpx.Timeout(timeout)
        self._max_retries = max_retries
        self._batch_size = batch_size
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._client = client
        self._async_client = async_client
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:
        # Never the API key.
        return f"OpenAIEmbedder(url={self._url!r}, model={self._model!r}, dim={self._requested_dim!r})"

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

    # -- the protocol, without I/O ------------------------------------------

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            after = self._retry_after(response)
            if after is not None:
                return after
        return min(self._backoff * 2.0**attempt, self._max_backoff)

    def _retry_after(self, response: httpx.Response) -> float | None:
        seconds = retry_after(response)  # the adapters' reading of Retry-After(-ms)
        return None if seconds is None else min(seconds, self._max_retry_after)

    def _plan(self, batch: list[str]) -> Generator[_Step, _Reply, npt.NDArray[np.float32]]:
        """Embed one batch: yields steps, receives their outcomes, returns the vectors."""
        payload: dict[str, object] = {"model": self._model, "input": batch}
        if self._requested_dim is not None:
            payload["dimensions"] = self._requested_dim
        body = _encoder.encode(payload)
        attempt = 0
        while True:
            reply = yield _Send(body)
            response = reply if isinstance(reply, httpx.Response) else None
            if isinstance(reply, httpx.TransportError):
                failure, status = f"{type(reply).__name__}: {reply}", None
            elif response is not None and response.is_success:
                return self._parse(response, len(batch))
            elif response is not None and (response.status_code in _RETRY_STATUSES or response.status_code >= 500):
                failure, status = f"HTTP {response.status_code}: {_snippet(response)}", response.status_code
            elif response is not None:
                raise EmbeddingRequestError(
                    f"embeddings request to {self._url} failed: HTTP {response.status_code}: "
                    f"{_snippet(response)}",
                    response.status_code,
                )
            else:
                raise AssertionError("a _Send step must be answered with a response or a transport error")
            if attempt >= self._max_retries:
                raise EmbeddingRequestError(
                    f"embeddings request to {self._url} failed after {attempt + 1} attempts; last: {failure}",
                    status,
                )
            yield _Sleep(self._delay(attempt, response))
            attempt += 1

    def _parse(self, response: httpx.Response, expected: int) -> npt.NDArray[np.float32]:
        import numpy as np

        def malformed(detail: str) -> EmbeddingRequestError:
            return EmbeddingRequestError(
                f"malformed embeddings response from {self._url} (HTTP {response.status_code}): "
                f"{detail}; body starts: {_snippet(response)}",
                response.status_code,
            )

        try:
            decoded = _decoder.decode(response.content)
        except msgspec.DecodeError as exc:  # ValidationError is a subclass
            raise malformed(str(exc)) from None
        items = sorted(decoded.data, key=lambda item: item.index)
        indices = [item.index for item in items]
        if indices != list(range(expected)):
            raise malformed(f"expected indices 0..{expected - 1}, got {indices[:10]}")
        width = len(items[0].embedding) if items else 0
        if width == 0 or any(len(item.embedding) != width for item in items):
            raise malformed("embeddings are empty or of different lengths")
        known = self._dim
        if known is not None and width != known:
            raise malformed(f"embeddings have {width} dimensions, expected {known}")
        matrix = np.array([item.embedding for item in items], dtype=np.float64)
        if not np.isfinite(matrix).all() or not matrix.any(axis=1).all():
            raise malformed("an embedding is all zeros or not finite")
        self._dim = width
        return normalize_rows(matrix)

    def _batches(self, texts: Sequence[str]) -> list[list[str]]:
        items = check_texts(texts)
        return [items[i : i + self._batch_size] for i in range(0, len(items), self._batch_size)]

    def _empty(self) -> npt.NDArray[np.float32]:
        import numpy as np

        return np.zeros((0, self._dim or 0), dtype=np.float32)

    # -- the two drivers ----------------------------------------------------

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of `texts` (blocking): float32, shape (len(texts), dim), unit rows.

        Empty input sends nothing and gives shape (0, dim), or (0, 0) while
        the dimension is not yet known.
        """
        import numpy as np

        batches = self._batches(texts)
        if not batches:
            return self._empty()
        if self._client is not None:
            return np.concatenate([self._run(self._client, b) for b in batches])
        with httpx.Client(timeout=self._timeout) as client:
            return np.concatenate([self._run(client, b) for b in batches])

    def _run(self, client: httpx.Client, batch: list[str]) -> npt.NDArray[np.float32]:
        plan = self._plan(batch)
        step = next(plan)
        while True:
            reply: _Reply = None
            if isinstance(step, _Sleep):
                self._sleep(step.seconds)
            else:
                try:
                    reply = client.post(self._url, content=step.body, headers=self._headers, timeout=self._timeout)
                except httpx.TransportError as exc:
                    reply = exc
            try:
                step = plan.send(reply)
            except StopIteration as done:
                return done.value

    async def embed_async(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of `texts`, awaiting the endpoint; same contract as :meth:`embed`."""
        import numpy as np

        batches = self._batches(texts)
        if not batches:
            return self._empty()
        if self._async_client is not None:
            return np.concatenate([await self._run_async(self._async_client, b) for b in batches])
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            return np.concatenate([await self._run_async(client, b) for b in batches])

    async def _run_async(self, client: httpx.AsyncClient, batch: list[str]) -> npt.NDArray[np.float32]:
        plan = self._plan(batch)
        step = next(plan)
        while True:
            reply: _Reply = None
            if isinstance(step, _Sleep):
                await self._async_sleep(step.seconds)
            else:
                try:
                    reply = await client.post(
                        self._url, content=step.body, headers=self._headers, timeout=self._timeout
                    )
                except httpx.TransportError as exc:
                    reply = exc
            try:
                step = plan.send(reply)
            except StopIteration as done:
                return done.value
