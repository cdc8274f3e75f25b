"""Hand-off between agents: a snapshot of pointers, not payloads.

One agent exports what it is working with (its resident page ids, its
conversation summary, its working-context slots and their versions, the log
position); another imports the snapshot and pages those blocks in lazily, on
its next turn or when it faults for one.  Within a tenant this is allowed;
into another tenant only while the source tenant has granted it
(`GrantIssued` in the source tenant's ``_grants`` namespace, revocable), and
the grant is checked at import and again at page-in.

A snapshot file is a pointer to a pointer: importing trusts only its id and
source, after checking that the id is the hash of the file's body; the
pointers themselves come from the `HandoffExported` event the source
recorded under that id.
"""

from __future__ import annotations

import hashlib

import msgspec

from vmem.errors import AccessDenied, UsageError
from vmem.schemas.events import Event, HandoffExported, HandoffImported
from vmem.schemas.messages import Snapshot
from vmem.state.fold import State
from vmem.state.namespace import subject_tokens

FORMAT = "vmem-handoff/1"
GRANTS_AGENT = "_grants"


def grants_ns(tenant: str) -> str:
    """The namespace that holds a tenant's grants."""
    return f"{tenant}/{GRANTS_AGENT}"


def snapshot_digest(snap: Snapshot) -> str:
    """The id a snapshot's body hashes to (its `snapshot_id` field left empty)."""
    body = msgspec.structs.replace(snap, snapshot_id="")
    return hashlib.sha256(msgspec.msgpack.encode(body)).hexdigest()[:24]


def export_snapshot(state: State, ns: str, through_seq: int) -> tuple[Snapshot, list[Event]]:
    """The pointers an agent hands off (pinned system blocks stay behind), and the event recording them."""
    pinned = set(state.pinned)
    resident = tuple(sorted((b for b in state.resident if b not in pinned), key=lambda b: (state.blocks[b].born, b)))
    summaries = (state.conversation_summary,) if state.conversation_summary else ()
    slots = tuple((label, state.slots[label].version) for label in state.slot_order)
    body = Snapshot(format=FORMAT, source_ns=ns, through_seq=through_seq, resident=resident, summaries=summaries,
                    slots=slots, turn=state.turn)
    snap = msgspec.structs.replace(body, snapshot_id=snapshot_digest(body))
    event = HandoffExported(ns=ns, snapshot_id=snap.snapshot_id, through_seq=through_seq,
                            blocks=resident + summaries, slots=slots)
    return snap, [event]


def parse_snapshot(data: bytes) -> Snapshot:
    """Decode `vmem handoff export` output; UsageError saying what is wrong, also if it was altered."""
    try:
        snap = msgspec.json.decode(data, type=Snapshot)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UsageError(f"not a vmem hand-off snapshot: {exc}; use the output of `vmem handoff export`") from None
    if snap.format != FORMAT:
        raise UsageError(f"hand-off snapshot format {snap.format!r} is not {FORMAT!r}; export it again with this vmem")
    if snapshot_digest(snap) != snap.snapshot_id:
        raise UsageError(
            f"hand-off snapshot {snap.snapshot_id!r} was altered after export (its content does not hash to its id); "
            f"use the output of `vmem handoff export --ns {snap.source_ns}` as it is"
        )
    return snap


def grant_allows(source_ns: str, target_ns: str, source_grants: State | None) -> bool:
    """Whether `target_ns` may take pointers from `source_ns`: the same tenant, or a live grant."""
    src_tenant, _ = subject_tokens(source_ns)
    dst_tenant, dst_agent = subject_tokens(target_ns)
    if src_tenant == dst_tenant:
        return True
    agents = source_grants.grants.get(dst_tenant) if source_grants is not None else None
    return agents is not None and (agents == "*" or dst_agent in agents.split(","))


def check_grant(source_ns: str, target_ns: str, source_grants: State | None) -> None:
    """AccessDenied unless `target_ns` may take pointers from `source_ns` (see :func:`grant_allows`)."""
    if not grant_allows(source_ns, target_ns, source_grants):
        src, dst = subject_tokens(source_ns)[0], subject_tokens(target_ns)[0]
        raise AccessDenied(
            f"hand-off from {source_ns} into {target_ns} crosses tenants ({src} -> {dst}) and {src} has granted {dst} "
            f"nothing; the source tenant runs `vmem grant --tenant {src} --to {dst}` first"
        )


def import_events(
    ns: str,
    source_ns: str,
    exported: HandoffExported,
    source: State,
    source_grants: State | None,
) -> list[Event]:
    """The import of `exported` (an event of `source_ns`) into `ns`, if the grant rule allows it."""
    if source_ns == ns:
        raise UsageError(f"{ns} cannot import its own hand-off")
    check_grant(source_ns, ns, source_grants)
    summaries = tuple(b for b in exported.blocks if b in source.summaries)
    resident = tuple(b for b in exported.blocks if b not in source.summaries)
    slots = tuple((label, source.slots[label].value) for label, _version in exported.slots if label in source.slots)
    return [HandoffImported(ns=ns, snapshot_id=exported.snapshot_id, source_ns=source_ns, blocks=exported.blocks,
                            resident=resident, summaries=summaries, slots=slots)]
