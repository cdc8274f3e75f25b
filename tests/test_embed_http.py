"""OpenAIEmbedder against a real HTTP server on 127.0.0.1 speaking OpenAI's wire format."""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from vmem.errors import ModelError, UsageError
from vmem.retrieval.embed import Embedder
from vmem.retrieval.embed_http import EmbeddingRequestError, OpenAIEmbedder


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class Reply:
    status: int = 200
    body: bytes | None = None  # None: a correct OpenAI response for the request
    headers: dict[str, str] = field(default_factory=dict)
    reorder: Callable[[list[dict]], list[dict]] | None = None


def vector_of(text: str, dims: int) -> list[float]:
    """The server's deterministic 'embedding' of a text."""
    seed = sum(text.encode()) + len(text)
    return [float((seed * (i + 3)) % 17 + 1) for i in range(dims)]


def openai_body(request: dict, dims: int, reorder: Callable[[list[dict]], list[dict]] | None) -> bytes:
    data = [
        {"object": "embedding", "index": i, "embedding": vector_of(t, dims)} for i, t in enumerate(request["input"])
    ]
    if reorder is not None:
        data = reorder(data)
    tokens = sum(len(t.split()) for t in request["input"])
    return json.dumps(
        {
            "object": "list",
            "data": data,
            "model": request["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    ).encode()


class FakeOpenAI:
    """Scripted replies (then correct ones); records every request."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: deque[Reply] = deque()
        self.native_dims = 8
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(raw)
                with owner._lock:
                    owner.seen.append(Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, request))
                    reply = owner.script.popleft() if owner.script else Reply()
                body = reply.body
                if body is None:
                    body = openai_body(request, request.get("dimensions", owner.native_dims), reply.reorder)
                # send_response_only: no automatic Date header, so a test can set its own.
                self.send_response_only(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        thread.join()


def unit(rows: list[list[float]]) -> np.ndarray:
    m = np.array(rows, dtype=np.float64)
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)


def make(server: FakeOpenAI, sleeps: list[float] | None = None, **kwargs) -> OpenAIEmbedder:
    return OpenAIEmbedder(server.base_url, "text-embedding-3-small", sleep=(sleeps if sleeps is not None else []).append, **kwargs)


def test_exact_request_and_response_shape(server: FakeOpenAI) -> None:
    e = make(server, api_key="sk-test", dim=4)
    assert isinstance(e, Embedder)
    texts = ["alpha", "beta gamma", ""]
    v = e.embed(texts)
    (req,) = server.seen
    assert req.method == "POST" and req.path == "/v1/embeddings"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.headers["content-type"] == "application/json"
    assert req.body == {"model": "text-embedding-3-small", "input": texts, "dimensions": 4}
    np.testing.assert_allclose(v, unit([vector_of(t, 4) for t in texts]), rtol=1e-6)
    assert v.dtype == np.float32 and v.shape == (3, 4)
    assert e.dim == 4 and e.id == "openai/text-embedding-3-small/4"
    assert "sk-test" not in repr(e)


def test_without_key_or_dim_the_native_dimension_is_learned(server: FakeOpenAI) -> None:
    e = make(server)
    with pytest.raises(UsageError, match="unknown until the first embed"):
        _ = e.dim
    assert e.embed([]).shape == (0, 0)
    assert server.seen == []  # nothing sent for nothing
    v = e.embed(["one"])
    (req,) = server.seen
    assert "authorization" not in req.headers
    assert req.body == {"model": "text-embedding-3-small", "input": ["one"]}
    assert v.shape == (1, server.native_dims) and e.dim == server.native_dims
    assert e.id == "openai/text-embedding-3-small/native"
    assert e.embed([]).shape == (0, server.native_dims)


def test_out_of_order_indices_are_put_back_in_input_order(server: FakeOpenAI) -> None:
    texts = [f"text number {i}" for i in range(7)]
    server.script.append(Reply(reorder=lambda data: data[::-1]))
    server.script.append(Reply(reorder=lambda data: data[3:] + data[:3]))
    e = make(server, dim=5)
    expected = unit([vector_of(t, 5) for t in texts])
    np.testing.assert_allclose(e.embed(texts), expected, rtol=1e-6)
    np.testing.assert_allclose(e.embed(texts), expected, rtol=1e-6)


def test_batches_of_at_most_256(server: FakeOpenAI) -> None:
    texts = [f"t{i}" for i in range(600)]
    v = make(server, dim=3).embed(texts)
    assert [len(s.body["input"]) for s in server.seen] == [256, 256, 88]
    assert [s.body["input"][0] for s in server.seen] == ["t0", "t256", "t512"]
    np.testing.assert_allclose(v, unit([vector_of(t, 3) for t in texts]), rtol=1e-6)
    make(server, dim=3, batch_size=100).embed(texts[:250])
    assert [len(s.body["input"]) for s in server.seen[3:]] == [100, 100, 50]


def test_429_then_200_honours_retry_after(server: FakeOpenAI) -> None:
    server.script.append(Reply(429, b'{"error":{"message":"Rate limit reached"}}', {"Retry-After": "2"}))
    sleeps: list[float] = []
    v = make(server, sleeps, dim=3).embed(["hi"])
    assert sleeps == [2.0]
    assert len(server.seen) == 2 and server.seen[0].body == server.seen[1].body
    np.testing.assert_allclose(v, unit([vector_of("hi", 3)]), rtol=1e-6)


def test_retry_after_as_http_date_uses_the_servers_date(server: FakeOpenAI) -> None:
    server.script.append(
        Reply(
            503,
            b"busy",
            {"Date": "Wed, 21 Oct 2015 07:28:00 GMT", "Retry-After": "Wed, 21 Oct 2015 07:28:07 GMT"},
        )
    )
    sleeps: list[float] = []
    make(server, sleeps, dim=3).embed(["hi"])
    assert sleeps == [7.0]


def test_500_exhausts_retries_with_exponential_backoff(server: FakeOpenAI) -> None:
    server.script.extend(Reply(500, b'{"error": "upstream exploded"}') for _ in range(4))
    sleeps: list[float] = []
    with pytest.raises(ModelError) as info:
        make(server, sleeps, dim=3, max_retries=3).embed(["hi"])
    assert isinstance(info.value, EmbeddingRequestError) and info.value.status == 500
    assert "after 4 attempts" in str(info.value)
    assert "HTTP 500" in str(info.value) and "upstream exploded" in str(info.value)
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(server.seen) == 4


def test_client_errors_are_not_retried(server: FakeOpenAI) -> None:
    server.script.append(Reply(401, b'{"error":{"message":"Incorrect API key provided"}}'))
    sleeps: list[float] = []
    with pytest.raises(EmbeddingRequestError, match="HTTP 401.*Incorrect API key") as info:
        make(server, sleeps, api_key="bad").embed(["hi"])
    assert info.value.status == 401 and sleeps == [] and len(server.seen) == 1


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>502 gateway</html>", "malformed.*<html>502 gateway"),
        (b'{"object":"list","data":[{"index":0}]}', "malformed.*embedding"),
        (b'{"object":"list","data":[{"index":0,"embedding":[1,2,3]},{"index":0,"embedding":[1,2,3]}]}', "indices"),
        (b'{"object":"list","data":[{"index":0,"embedding":[1,2]},{"index":1,"embedding":[1,2]}]}', "2 dimensions"),
        (b'{"object":"list","data":[{"index":0,"embedding":[0,0,0]},{"index":1,"embedding":[1,2,3]}]}', "all zeros"),
    ],
)
def test_malformed_bodies_are_model_errors(server: FakeOpenAI, body: bytes, match: str) -> None:
    server.script.append(Reply(200, body))
    with pytest.raises(ModelError, match=match):
        make(server, dim=3).embed(["a", "b"])
    assert len(server.seen) == 1  # a malformed success is not retried


def test_transport_errors_are_retried_then_reported() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    e = OpenAIEmbedder(f"http://127.0.0.1:{port}", "m", max_retries=2, sleep=sleeps.append, timeout=2)
    with pytest.raises(EmbeddingRequestError, match="after 3 attempts; last: ConnectError") as info:
        e.embed(["hi"])
    assert info.value.status is None and sleeps == [0.5, 1.0]


def test_bad_configuration_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        OpenAIEmbedder("localhost:8080", "m")
    with pytest.raises(UsageError):
        OpenAIEmbedder("http://x", "m", batch_size=257)
    with pytest.raises(UsageError):
        OpenAIEmbedder("http://x", "m").embed("one string")


@pytest.mark.anyio
async def test_async_embed_retries_and_orders(server: FakeOpenAI) -> None:
    server.script.append(Reply(429, b"slow down", {"Retry-After": "0.25"}))
    server.script.append(Reply(reorder=lambda data: data[::-1]))
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    e = OpenAIEmbedder(server.base_url, "m", dim=3, api_key="k", async_sleep=fake_sleep)
    texts = ["x", "yy", "zzz"]
    v = await e.embed_async(texts)
    assert sleeps == [0.25]
    assert [s.headers["authorization"] for s in server.seen] == ["Bearer k", "Bearer k"]
    np.testing.assert_allclose(v, unit([vector_of(t, 3) for t in texts]), rtol=1e-6)
    assert (await e.embed_async([])).shape == (0, 3)
