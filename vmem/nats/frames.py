"""The JetStream log's frames: one append stored as one message, and the sequence arithmetic.

An append is one JetStream message, a *frame*: the batch's stored records
(:mod:`vmem.schemas.codec` format, each with its checksum) plus the
idempotency key and a per-call id.  One message is stored atomically, so a
batch is all or nothing.

Event sequences are derived from stream sequences: the ``n`` events of the
frame at stream sequence ``S`` are ``S*STRIDE - n .. S*STRIDE - 1``
(``STRIDE`` = 1,000,000).  A namespace's last sequence always ends a frame,
so ``expected_last = E`` maps exactly onto the stream sequence ``(E+1)/STRIDE``.
"""

from __future__ import annotations

import msgspec

from vmem.errors import CorruptRecord
from vmem.storage.log import AppendResult

STRIDE = 1_000_000
"""Event sequences per stream sequence: at most STRIDE - 1 events per append."""

FRAME_VERSION = 1


class Frame(msgspec.Struct, array_like=True, frozen=True):
    """One append as stored in one JetStream message."""

    v: int
    key: str | None
    call: str
    records: list[bytes]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode_frame(key: str | None, call: str, records: list[bytes]) -> bytes:
    return _encoder.encode(Frame(FRAME_VERSION, key, call, records))


def decode_frame(stream_seq: int, data: bytes) -> Frame:
    """The frame stored at `stream_seq`; CorruptRecord (named by its last event sequence) if it is none."""
    try:
        frame = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptRecord(stream_seq * STRIDE - 1, f"stream message {stream_seq} is not a vmem frame: {exc}") from None
    except RecursionError:
        raise CorruptRecord(stream_seq * STRIDE - 1, f"stream message {stream_seq} is nested too deeply to be a frame") from None
    if frame.v != FRAME_VERSION:
        raise CorruptRecord(stream_seq * STRIDE - 1, f"stream message {stream_seq} is a frame of version {frame.v}; upgrade vmem")
    return frame


def frame_result(stream_seq: int, n: int, *, duplicate: bool) -> AppendResult:
    """The event sequences of the `n` events of the frame at `stream_seq`."""
    return AppendResult(stream_seq * STRIDE - n, stream_seq * STRIDE - 1, duplicate=duplicate)


def first_stream_seq_after(event_seq: int) -> int:
    """The first stream sequence that can hold events after `event_seq`."""
    return (max(event_seq, 0) + 1) // STRIDE + 1


def ends_a_frame(event_seq: int) -> bool:
    """Whether `event_seq` can be a namespace's last sequence (0: an empty namespace)."""
    return event_seq == 0 or (event_seq + 1) % STRIDE == 0


def stream_seq_of_last(event_seq: int) -> int:
    """The stream sequence of the frame `event_seq` ends (`event_seq` must end a frame)."""
    return (event_seq + 1) // STRIDE
