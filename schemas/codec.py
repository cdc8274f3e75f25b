"""Encoding of events and bus messages: msgpack, one Encoder/Decoder per process.

A stored record is ``crc32 (4 bytes) | version (2 bytes) | msgpack(event)``,
big-endian.  The checksum covers version and payload, so a flipped bit on disk
is detected and named by sequence instead of being folded into state.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, TypeVar

import msgspec

from vmem.errors import SchemaError
from vmem.schemas.events import EVENT_BY_TAG, Event
from vmem.schemas.upcast import UPCASTERS

T = TypeVar("T")

_HEADER = struct.Struct(">IH")
HEADER_SIZE = _HEADER.size

# Created once: msgspec's Encoder/Decoder objects are its fast path.
_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(Event)
_any_decoder = msgspec.msgpack.Decoder()
_json_encoder = msgspec.json.Encoder()
_decoders: dict[type, tuple[msgspec.msgpack.Decoder, msgspec.json.Decoder]] = {}


def encode(obj: Any) -> bytes:
    """msgpack bytes of an event, message or any msgspec-encodable value."""
    return _encoder.encode(obj)


def encode_record(event: Event) -> bytes:
    """The stored form of an event: checksum, version, payload."""
    payload = _encoder.encode(event)
    body = _HEADER.pack(0, type(event).VERSION)[4:] + payload
    return struct.pack(">I", zlib.crc32(body)) + body


def decode_record(record: bytes, *, where: str = "record") -> Event:
    """Decode a stored record; raises SchemaError on bad checksum or bytes."""
    if len(record) <= HEADER_SIZE:
        raise SchemaError(f"{where}: {len(record)} bytes is shorter than a record header")
    view = memoryview(record)
    crc, version = _HEADER.unpack_from(record)
    if zlib.crc32(view[4:]) != crc:
        raise SchemaError(f"{where}: checksum mismatch (stored {crc:#010x})")
    # The fast path (replay's hot loop): a current-version event, decoded
    # straight from the record's buffer without copying the payload.
    try:
        event = _event_decoder.decode(view[HEADER_SIZE:])
    except msgspec.DecodeError:
        pass
    except RecursionError:
        raise SchemaError(f"{where}: nested too deeply to decode") from None
    else:
        if type(event).VERSION == version:
            return event
    return decode_event(bytes(view[HEADER_SIZE:]), version, where=where)


def decode_event(payload: bytes, version: int, *, where: str = "event") -> Event:
    """Decode an event payload written at schema `version`, upcasting if older."""
    try:
        event = _event_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        event = None
        fast_error: Exception | None = exc
    except RecursionError:
        raise SchemaError(f"{where}: nested too deeply to decode") from None
    else:
        fast_error = None
        if type(event).VERSION == version:
            return event
    return _decode_slow(payload, version, where, fast_error)


def _decode_slow(payload: bytes, version: int, where: str, fast_error: Exception | None) -> Event:
    try:
        raw = _any_decoder.decode(payload)
    except RecursionError:
        raise SchemaError(f"{where}: nested too deeply to decode") from None
    except msgspec.DecodeError as exc:
        raise SchemaError(f"{where}: not msgpack ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise SchemaError(f"{where}: expected an event map with a 'type' tag, got {type(raw).__name__}")
    tag = raw["type"]
    cls = EVENT_BY_TAG.get(tag)
    if cls is None:
        raise SchemaError(f"{where}: unknown event type {tag!r}; is this vmem older than the writer?")
    if version > cls.VERSION:
        raise SchemaError(
            f"{where}: {tag} version {version} is newer than this vmem knows ({cls.VERSION}); upgrade vmem"
        )
    while version < cls.VERSION:
        step = UPCASTERS.get((tag, version))
        if step is None:
            raise SchemaError(f"{where}: no upcaster for {tag} from version {version}")
        raw = step(raw)
        version += 1
    try:
        return msgspec.convert(raw, Event)
    except msgspec.ValidationError as exc:
        detail = exc if fast_error is None else fast_error
        raise SchemaError(f"{where}: invalid {tag} v{version}: {detail}") from None


def is_json(data: bytes) -> bool:
    """Whether a bus payload is JSON (a JSON object) rather than msgpack.

    Every vmem message is a map: in msgpack its first byte is 0x80-0x8f,
    0xde or 0xdf, never ``{`` or JSON whitespace, so the two cannot be confused.
    """
    head = data[:1]
    if head in (b" ", b"\t", b"\n", b"\r"):
        head = data.lstrip()[:1]
    return head == b"{"


def encode_as(obj: Any, *, json: bool) -> bytes:
    """`obj` as JSON or msgpack: replies go back in the encoding of their request."""
    return _json_encoder.encode(obj) if json else _encoder.encode(obj)


def _decoders_for(cls: Any) -> tuple[msgspec.msgpack.Decoder, msgspec.json.Decoder]:
    pair = _decoders.get(cls)
    if pair is None:
        pair = _decoders[cls] = (msgspec.msgpack.Decoder(cls), msgspec.json.Decoder(cls))
    return pair


def decode(data: bytes, cls: type[T], *, where: str = "message") -> T:
    """Decode bus-message bytes (msgpack, or JSON) as `cls`; SchemaError naming what was wrong.

    Whatever the bytes, the only error is SchemaError: nesting too deep for the
    decoder (a RecursionError) is refused like any other malformed input.
    """
    packed, text = _decoders_for(cls)
    try:
        return (text if is_json(data) else packed).decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SchemaError(f"{where}: cannot decode as {getattr(cls, '__name__', 'a message')}: {exc}") from None
    except RecursionError:
        raise SchemaError(f"{where}: nested too deeply to decode; send a flat message") from None
