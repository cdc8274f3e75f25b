"""OpenAIEmbedder against a real HTTP server on 127.0.0.1 that checks OpenAI's embeddings wire format.

The fake rejects (400 ``invalid_request_error``) a request the real API would
reject and answers the rest with deterministic vectors.  The shared Embedder
conformance suite runs against it; the tests here cover what only this
embedder does: the exact request, learning the native dimension, batching,
retries and malformed replies.  Every test runs under asyncio and trio.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from conformance.embedder_suite import EmbedderConformance
from fakehttp import FakeProvider, Reply, Seen, Sleeps, bearer_json_post_problems, running

from vmem.errors import ModelError, UsageError
from vmem.models.http_retry import ModelHTTPError
from vmem.models.openai_embeddings import OpenAIEmbedder
from vmem.retrieval.embed import Embedder

pytestmark = pytest.mark.anyio

KEY = "sk-test"
MODEL = "text-embedding-3-small"


def vector_of(text: str, dims: int) -> list[float]:
    """The server's deterministic 'embedding' of a text."""
    seed = sum(text.encode()) + len(text)
    return [float((seed * (i + 3)) % 17 + 1) for i in range(dims)]


def check_request(seen: Seen, key: str | None) -> list[str]:
    """What the real embeddings API would object to."""
    problems = bearer_json_post_problems(seen, "/v1/embeddings", key)
    body = seen.body
    if not isinstance(body, dict):
        return problems + ["body is not a JSON object"]
    if set(body) - {"model", "input", "dimensions", "encoding_format", "user"} or not {"model", "input"} <= set(body):
        problems.append(f"body keys are {sorted(body)}")
    if not isinstance(body.get("model"), str) or not body.get("model"):
        problems.append("model must be a non-empty string")
    texts = body.get("input")
    if not isinstance(texts, list) or not 1 <= len(texts) <= 2048 or not all(isinstance(t, str) for t in texts):
        problems.append("input must be a list of 1 to 2048 strings")
    dims = body.get("dimensions", 1)
    if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
        problems.append(f"dimensions must be a positive integer, got {dims!r}")
    return problems


class FakeEmbeddings(FakeProvider):
    """OpenAI's ``POST /v1/embeddings``, with vectors from :func:`vector_of`."""

    native_dims = 8

    def __init__(self, key: str | None = KEY) -> None:
        super().__init__()
        self.key = key
        self.base_url = self.origin + "/v1"

    def answer(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        problems = check_request(seen, self.key)
        if problems:
            error = {"message": "; ".join(problems), "type": "invalid_request_error", "param": None, "code": None}
            return 400, {"error": error}
        texts, dims = seen.body["input"], seen.body.get("dimensions", self.native_dims)
        tokens = sum(len(t.split()) for t in texts)
        return 200, {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": vector_of(t, dims)} for i, t in enumerate(texts)],
            "model": seen.body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def reordered(order: Any) -> Reply:
    """The fake's answer with its items in another order (the index says where each belongs)."""
    return Reply(edit=lambda obj: obj | {"data": order(obj["data"])})


@pytest.fixture
def server() -> Iterator[FakeEmbeddings]:
    with running(FakeEmbeddings()) as fake:
        yield fake


def unit(rows: list[list[float]]) -> np.ndarray:
    m = np.array(rows, dtype=np.float64)
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)


def make(server: FakeEmbeddings, sleeps: Sleeps | None = None, **kwargs: Any) -> OpenAIEmbedder:
    kwargs.setdefault("api_key", KEY)
    return OpenAIEmbedder(server.base_url, MODEL, sleep=sleeps if sleeps is not None else Sleeps(), **kwargs)


@pytest.fixture
async def embedder(server: FakeEmbeddings) -> AsyncIterator[OpenAIEmbedder]:
    e = make(server, dim=16)
    try:
        yield e
    finally:
        await e.aclose()


class TestOpenAIEmbedderConformance(EmbedderConformance):
    """The shared suite against the fake embeddings endpoint, which checks every request."""

    semantic = True


# -- the wire format ------------------------------------------------------------


async def test_exact_request_and_response_shape(server: FakeEmbeddings) -> None:
    async with make(server, dim=4) as e:
        assert isinstance(e, Embedder)
        texts = ["alpha", "beta gamma", ""]
        v = await e.embed(texts)
    (req,) = server.seen
    assert req.method == "POST" and req.path == "/v1/embeddings"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    assert req.body == {"model": MODEL, "input": texts, "dimensions": 4}
    np.testing.assert_allclose(v, unit([vector_of(t, 4) for t in texts]), rtol=1e-6)
    assert v.dtype == np.float32 and v.shape == (3, 4)
    assert e.dim == 4 and e.id == f"openai/{MODEL}/4" and e.semantic
    assert KEY not in repr(e)


async def test_without_key_or_dim_the_native_dimension_is_learned(server: FakeEmbeddings) -> None:
    server.key = None
    async with make(server, api_key=None) as e:
        with pytest.raises(UsageError, match="unknown until the first embed"):
            _ = e.dim
        assert (await e.embed([])).shape == (0, 0)
        assert server.seen == []  # nothing sent for nothing
        v = await e.embed(["one"])
        (req,) = server.seen
        assert "authorization" not in req.headers
        assert req.body == {"model": MODEL, "input": ["one"]}
        assert v.shape == (1, server.native_dims) and e.dim == server.native_dims
        assert e.id == f"openai/{MODEL}/native"
        assert (await e.embed([])).shape == (0, server.native_dims)


async def test_out_of_order_indices_are_put_back_in_input_order(server: FakeEmbeddings) -> None:
    texts = [f"text number {i}" for i in range(7)]
    server.script.append(reordered(lambda data: data[::-1]))
    server.script.append(reordered(lambda data: data[3:] + data[:3]))
    expected = unit([vector_of(t, 5) for t in texts])
    async with make(server, dim=5) as e:
        np.testing.assert_allclose(await e.embed(texts), expected, rtol=1e-6)
        np.testing.assert_allclose(await e.embed(texts), expected, rtol=1e-6)


async def test_batches_of_at_most_256(server: FakeEmbeddings) -> None:
    texts = [f"t{i}" for i in range(600)]
    async with make(server, dim=3) as e:
        v = await e.embed(texts)
    assert [len(s.body["input"]) for s in server.seen] == [256, 256, 88]
    assert [s.body["input"][0] for s in server.seen] == ["t0", "t256", "t512"]
    np.testing.assert_allclose(v, unit([vector_of(t, 3) for t in texts]), rtol=1e-6)
    async with make(server, dim=3, batch_size=100) as e:
        await e.embed(texts[:250])
    assert [len(s.body["input"]) for s in server.seen[3:]] == [100, 100, 50]


async def test_one_connection_pool_until_aclose(server: FakeEmbeddings) -> None:
    e = make(server, dim=3)
    assert e._http._client is None  # nothing opened by the constructor
    await e.embed(["a"])
    client = e._http._client
    assert client is not None and not client.is_closed
    await e.embed(["b"])
    assert e._http._client is client  # reused across calls
    await e.aclose()
    assert client.is_closed and e._http._client is None


# -- retries and errors (the model adapters' rules, vmem.models.http_retry) ----------


async def test_429_then_200_honours_retry_after(server: FakeEmbeddings) -> None:
    server.script.append(Reply(429, b'{"error":{"message":"Rate limit reached"}}', {"Retry-After": "2"}))
    sleeps = Sleeps()
    async with make(server, sleeps, dim=3) as e:
        v = await e.embed(["hi"])
    assert sleeps == [2.0]
    assert len(server.seen) == 2 and server.seen[0].body == server.seen[1].body
    np.testing.assert_allclose(v, unit([vector_of("hi", 3)]), rtol=1e-6)


async def test_408_is_retried(server: FakeEmbeddings) -> None:
    server.script.append(Reply(408, b"request timeout"))
    sleeps = Sleeps()
    async with make(server, sleeps, dim=3) as e:
        await e.embed(["hi"])
    assert sleeps == [0.5] and len(server.seen) == 2


async def test_retry_after_as_http_date_uses_the_servers_date(server: FakeEmbeddings) -> None:
    server.script.append(
        Reply(
            503,
            b"busy",
            {"Date": "Wed, 21 Oct 2015 07:28:00 GMT", "Retry-After": "Wed, 21 Oct 2015 07:28:07 GMT"},
        )
    )
    sleeps = Sleeps()
    async with make(server, sleeps, dim=3) as e:
        await e.embed(["hi"])
    assert sleeps == [7.0]


async def test_500_exhausts_retries_with_exponential_backoff(server: FakeEmbeddings) -> None:
    server.script.extend(Reply(500, b'{"error": "upstream exploded"}') for _ in range(4))
    sleeps = Sleeps()
    async with make(server, sleeps, dim=3, max_retries=3) as e:
        with pytest.raises(ModelError) as info:
            await e.embed(["hi"])
    assert isinstance(info.value, ModelHTTPError) and info.value.status == 500 and info.value.attempts == 4
    assert "after 4 attempts" in str(info.value) and "/v1/embeddings" in str(info.value)
    assert "HTTP 500" in str(info.value) and "upstream exploded" in str(info.value)
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(server.seen) == 4


async def test_client_errors_are_not_retried(server: FakeEmbeddings) -> None:
    server.script.append(Reply(401, b'{"error":{"message":"Incorrect API key provided"}}'))
    sleeps = Sleeps()
    async with make(server, sleeps, api_key="bad") as e:
        with pytest.raises(ModelHTTPError, match="HTTP 401.*Incorrect API key") as info:
            await e.embed(["hi"])
    assert info.value.status == 401 and sleeps == [] and len(server.seen) == 1


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>502 gateway</html>", "malformed.*<html>502 gateway"),
        (b'{"object":"list","data":[{"index":0}]}', "malformed.*missing required field `embedding`"),
        (b'{"object":"list","data":[{"index":0,"embedding":[1,2,3]},{"index":0,"embedding":[1,2,3]}]}', "indices"),
        (b'{"object":"list","data":[{"index":0,"embedding":[1,2]},{"index":1,"embedding":[1,2]}]}', "2 dimensions"),
        (b'{"object":"list","data":[{"index":0,"embedding":[0,0,0]},{"index":1,"embedding":[1,2,3]}]}', "all zeros"),
    ],
)
async def test_malformed_bodies_are_model_errors(server: FakeEmbeddings, body: bytes, match: str) -> None:
    server.script.append(Reply(200, body))
    async with make(server, dim=3) as e:
        with pytest.raises(ModelError, match=match):
            await e.embed(["a", "b"])
    assert len(server.seen) == 1  # a malformed success is not retried


async def test_transport_errors_are_retried_then_reported() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    async with OpenAIEmbedder(f"http://127.0.0.1:{port}", "m", max_retries=2, sleep=sleeps, timeout=2) as e:
        with pytest.raises(ModelHTTPError, match="after 3 attempts; last: ConnectError") as info:
            await e.embed(["hi"])
    assert info.value.status is None and sleeps == [0.5, 1.0]


async def test_bad_input_and_configuration_are_usage_errors(server: FakeEmbeddings) -> None:
    for kwargs in ({"base_url": "localhost:8080"}, {"batch_size": 257}, {"dim": 0}, {"model": ""},
                   {"max_retries": -1}, {"timeout": 0}):
        args = {"base_url": server.base_url, "model": "m"} | kwargs
        with pytest.raises(UsageError):
            OpenAIEmbedder(args.pop("base_url"), args.pop("model"), **args)
    async with make(server, dim=3) as e:
        with pytest.raises(UsageError, match="single string"):
            await e.embed("one string")
        with pytest.raises(UsageError, match="item 1"):
            await e.embed(["ok", b"bytes"])  # type: ignore[list-item]
    assert server.seen == []  # refused before anything was sent


def test_the_fake_rejects_what_the_api_would() -> None:
    """The checks the conformance suite relies on do catch a wrong request."""
    ok = {"model": MODEL, "input": ["a"], "dimensions": 3}
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    assert check_request(Seen("POST", "/v1/embeddings", headers, ok), KEY) == []
    bad = [
        Seen("POST", "/v1/embedding", headers, ok),
        Seen("POST", "/v1/embeddings", {"content-type": "application/json"}, ok),
        Seen("POST", "/v1/embeddings", headers, ok | {"input": "a"}),
        Seen("POST", "/v1/embeddings", headers, ok | {"input": []}),
        Seen("POST", "/v1/embeddings", headers, ok | {"dimensions": 0}),
        Seen("POST", "/v1/embeddings", headers, ok | {"extra": 1}),
        Seen("POST", "/v1/embeddings", headers, json.loads('{"input": ["a"]}')),
    ]
    assert all(check_request(seen, KEY) for seen in bad)
