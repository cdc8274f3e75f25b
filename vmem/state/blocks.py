"""Content-addressed blocks: a block's id is the hash of its canonical encoding."""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

import msgspec

from vmem.schemas.events import BlockWritten

_canonical = msgspec.msgpack.Encoder(order="deterministic")


def block_id(kind: str, role: str, text: str, attrs: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> str:
    """The id of a block: SHA-256 (first 128 bits, hex) of its canonical encoding."""
    pairs = sorted(dict(attrs).items())
    digest = hashlib.sha256(_canonical.encode([kind, role, text, pairs])).hexdigest()
    return digest[:32]


def make_block(
    ns: str, kind: str, role: str, text: str, attrs: Mapping[str, str] | None = None
) -> BlockWritten:
    """A BlockWritten event for a block, with its content-addressed id."""
    pairs = tuple(sorted((attrs or {}).items()))
    return BlockWritten(
        ns=ns, block_id=block_id(kind, role, text, pairs), kind=kind, role=role, text=text, attrs=pairs  # type: ignore[arg-type]
    )
