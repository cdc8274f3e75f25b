"""Schemas: every event round-trips, old versions upcast, bad bytes fail clearly."""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmem.errors import SchemaError
from vmem.schemas import events as ev
from vmem.schemas.codec import decode, decode_record, encode_record
from vmem.schemas.messages import Reply, SearchReply

GOLDEN = Path(__file__).parent.parent / "schemas" / "golden"

def _strategy(tp):
    """Values of a field type, with ints in msgpack's range."""
    origin = typing.get_origin(tp)
    if tp is int:
        return st.integers(-(2**63), 2**63 - 1)
    if tp is str:
        return st.text(max_size=40)
    if tp is float:
        return st.floats(allow_nan=False)  # NaN never equals itself
    if origin is dict:
        key, value = typing.get_args(tp)
        return st.dictionaries(_strategy(key), _strategy(value), max_size=3)
    if tp is bool:
        return st.booleans()
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return st.builds(tp, **{f.name: _strategy(f.type) for f in msgspec.structs.fields(tp)})
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_strategy(args[0]), max_size=3).map(tuple)
        return st.tuples(*(_strategy(a) for a in args))
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    return st.from_type(tp)


events = st.sampled_from(ev.EVENT_TYPES).flatmap(
    lambda cls: st.builds(cls, **{f.name: _strategy(f.type) for f in msgspec.structs.fields(cls)})
)


@given(events)
def test_every_event_type_round_trips(event):
    assert decode_record(encode_record(event)) == event


def test_golden_records_of_earlier_versions_still_decode():
    records = msgspec.msgpack.decode((GOLDEN / "events-2026-11.msgpack").read_bytes())
    decoded = [decode_record(r) for r in records]
    evicted = decoded[0]
    # v1 of page_evicted called the reason `policy`; the upcaster renames it.
    assert isinstance(evicted, ev.PageEvicted) and evicted.reason == "lru"
    assert {type(e) for e in decoded} >= {ev.BlockWritten, ev.PromptPacked, ev.SummaryCommitted}
    assert all(e.ns == "acme/agent7" for e in decoded)


def test_flipped_bit_is_a_checksum_error():
    rec = bytearray(encode_record(ev.PageLoaded(ns="a/b", block_id="x", turn=1)))
    rec[-1] ^= 0x01
    with pytest.raises(SchemaError, match="checksum mismatch"):
        decode_record(bytes(rec))


@pytest.mark.parametrize(
    ("payload", "version", "message"),
    [
        (b"\xc1", 1, "not msgpack"),
        (msgspec.msgpack.encode([1, 2]), 1, "expected an event map"),
        (msgspec.msgpack.encode({"type": "no_such_event", "ns": "a/b"}), 1, "unknown event type 'no_such_event'"),
        (msgspec.msgpack.encode({"type": "page_loaded", "ns": "a/b", "block_id": "x", "turn": 1}), 9, "newer than this vmem"),
        (msgspec.msgpack.encode({"type": "page_loaded", "ns": "a/b", "turn": "one"}), 1, "invalid page_loaded"),
    ],
)
def test_bad_payloads_raise_schema_errors_that_say_what(payload, version, message):
    import struct
    import zlib

    body = struct.pack(">H", version) + payload
    record = struct.pack(">I", zlib.crc32(body)) + body
    with pytest.raises(SchemaError, match=message):
        decode_record(record)


def test_short_record_is_rejected():
    with pytest.raises(SchemaError, match="shorter than a record header"):
        decode_record(b"\x00\x01")


def test_bus_message_decode_names_the_type():
    with pytest.raises(SchemaError, match="cannot decode as"):
        decode(b"\x93\x01\x02\x03", Reply)
    assert isinstance(decode(msgspec.msgpack.encode(SearchReply(candidates=())), Reply), SearchReply)


def test_events_are_frozen_and_carry_a_namespace():
    for cls in ev.EVENT_TYPES:
        assert cls.__struct_config__.frozen
        assert "ns" in cls.__struct_fields__
        assert cls.VERSION >= 1


def test_golden_records_of_2026_12_decode_and_upcast_the_summary_scope():
    records = msgspec.msgpack.decode((GOLDEN / "events-2026-12.msgpack").read_bytes())
    flush, evict, v2, unpinned, refused = [decode_record(r) for r in records]
    # v1 of summary_committed said "conversation" with a flush: job id; v2 says it in `scope`.
    assert isinstance(flush, ev.SummaryCommitted) and flush.scope == "conversation"
    assert isinstance(evict, ev.SummaryCommitted) and evict.scope == "pages"
    assert isinstance(v2, ev.SummaryCommitted) and v2.scope == "conversation" and v2.job_id == "flush:x"
    assert isinstance(unpinned, ev.PageUnpinned) and unpinned.turn == 4
    assert isinstance(refused, ev.HandoffRefused) and refused.source_ns == "globex/alice"


def test_requests_are_bounded_and_deep_nesting_is_a_schema_error():
    from vmem.schemas.messages import Request, SearchRequest, TurnRequest

    with pytest.raises(SchemaError, match="nested too deeply"):
        decode(b"\x84" + msgspec.msgpack.encode("msg") + msgspec.msgpack.encode("search") + msgspec.msgpack.encode("ns")
               + msgspec.msgpack.encode("a/b") + msgspec.msgpack.encode("query") + msgspec.msgpack.encode("q")
               + msgspec.msgpack.encode("junk") + b"\x91" * 50_000 + b"\x00", Request)
    with pytest.raises(SchemaError, match="<= 2000000"):
        decode(msgspec.msgpack.encode({"msg": "turn", "ns": "a/b", "budget": 10**9}), Request)
    with pytest.raises(SchemaError, match="length <= 16384"):
        decode(msgspec.msgpack.encode({"msg": "search", "ns": "a/b", "query": "q" * 20_000}), Request)
    # JSON as well as msgpack: a pipeline in another language.
    req = decode(b' {"msg": "search", "ns": "a/b", "query": "keeper"}', Request)
    assert req == SearchRequest(ns="a/b", query="keeper")
    assert isinstance(decode(msgspec.msgpack.encode({"msg": "turn", "ns": "a/b", "budget": 512}), Request), TurnRequest)
