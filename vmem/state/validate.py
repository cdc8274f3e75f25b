"""Stored events are input: the checks an event passes before it is folded.

A log is written only by vmem's actors, but its bytes are read back from a
disk or a server that others may reach, so folding trusts nothing it did not
check.  The rule, the same for the live view and for replay (so both skip the
same records and agree on the state hash):

* a record that does not decode (checksum, msgpack, schema) is skipped;
* an event whose namespace is not the namespace read is skipped;
* a ``BlockWritten`` whose id is not the hash of its content, whose
  attributes repeat a name, or whose numeric attributes (``page``, ``turn``)
  are not decimal numbers is skipped;
* an event that names another namespace (a hand-off's source) must name a
  valid one.

Each skipped record is reported by sequence with the reason.  Checks that
depend on the state (a page loaded that was never written) are made by the
fold itself, which ignores such events.
"""

from __future__ import annotations

import hashlib

import msgspec

from vmem.errors import InvalidNamespace
from vmem.schemas.events import (
    BlockWritten,
    Event,
    GrantIssued,
    GrantRevoked,
    HandoffImported,
)
from vmem.state.blocks import block_id
from vmem.state.namespace import validate_namespace

NUMERIC_ATTRS = ("page", "turn")
_encoder = msgspec.msgpack.Encoder()
_MAX_DIGITS = 12


class Rejected(msgspec.Struct, frozen=True):
    """A stored record that was not folded, and why."""

    seq: int
    reason: str


def check_stored(ns: str, event: Event) -> str:
    """Why `event`, read from the log of `ns`, must not be folded; "" if it may be."""
    if event.ns != ns:
        return f"carries namespace {event.ns!r}, not {ns!r}"
    kind = type(event)
    if kind is BlockWritten:
        return _check_block(event)  # type: ignore[arg-type]
    if kind is HandoffImported:
        try:
            validate_namespace(event.source_ns)  # type: ignore[attr-defined]
        except InvalidNamespace:
            return f"hand-off source {event.source_ns!r} is not a namespace"  # type: ignore[attr-defined]
    elif kind is GrantIssued or kind is GrantRevoked:
        try:
            validate_namespace(f"{event.to_tenant}/x")  # type: ignore[attr-defined]
        except InvalidNamespace:
            return f"grant names {event.to_tenant!r}, not a tenant"  # type: ignore[attr-defined]
    return ""


def _check_block(b: BlockWritten) -> str:
    attrs = b.attrs
    names = [k for k, _v in attrs]
    if len(set(names)) != len(names):
        return f"block {b.block_id[:12]} repeats an attribute name"
    for name, value in attrs:
        if name in NUMERIC_ATTRS and not (value.isdigit() and value.isascii() and len(value) <= _MAX_DIGITS):
            return f"block {b.block_id[:12]}: attribute {name}={value[:20]!r} is not a number"
    # Replay checks every block, so the common case (attributes stored sorted, as
    # make_block writes them) hashes the stored tuple as it is: the same bytes.
    sorted_ = all(names[i] < names[i + 1] for i in range(len(names) - 1))
    digest = (hashlib.sha256(_encoder.encode((b.kind, b.role, b.text, attrs))).hexdigest()[:32] if sorted_
              else block_id(b.kind, b.role, b.text, attrs))
    if digest != b.block_id:
        return f"block id {b.block_id[:12]} is not the hash of its content"
    return ""
