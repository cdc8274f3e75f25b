"""The wire formats as JSON Schema: what ``vmem schema`` prints.

A program in any language can speak to the actors from these: a request is a
JSON (or msgpack) object tagged by its ``msg`` field, sent as a NATS request to
``vmem.<tenant>.<agent>.<actor>.<verb>`` (see ``routes``); the reply comes back
in the request's encoding, one of the reply types (an ``error`` reply names
what was wrong).  Events (tagged by ``type``) are what the log holds, what
``reader.read`` returns and what ``vmem.<tenant>.<agent>.events`` announces.
"""

from __future__ import annotations

from typing import Any

import msgspec

from vmem.schemas.events import EVENT_TYPES
from vmem.schemas.messages import REPLY_TYPES, REQUEST_TYPES, EventsCommitted, Snapshot

FAMILIES: dict[str, tuple[type, ...]] = {
    "requests": REQUEST_TYPES,
    "replies": REPLY_TYPES,
    "events": EVENT_TYPES,
    "notifications": (EventsCommitted, Snapshot),
}

ROUTES: dict[str, str] = {
    "pager.turn": "turn", "pager.fault": "fault", "pager.evict": "evict", "pager.pin": "pin",
    "retriever.search": "search", "retriever.embedder": "embedder", "retriever.reindex": "reindex", "reducer.reduce": "reduce", "reducer.tool_results": "tool_results",
    "reducer.end": "end_turn", "memory.ingest": "ingest", "memory.slot": "slot", "memory.permissions": "permissions",
    "memory.grant": "grant", "memory.export": "export", "memory.import": "import", "reader.read": "read",
    "reader.tail": "tail", "reader.block": "block", "reader.traces": "traces", "reader.state": "state",
    "reader.replay": "replay", "reader.namespaces": "namespaces", "reader.prompt": "prompt",
}
"""The routes a client may call (``<actor>.<verb>``), each with the tag of the request it takes."""


def json_schema(kind: str = "all") -> dict[str, Any]:
    """JSON Schema of one family of wire types (or of all), with the client routes."""
    families = FAMILIES if kind == "all" else {kind: FAMILIES[kind]}
    types = tuple(t for ts in families.values() for t in ts)
    schemas, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    out: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"vmem wire formats ({kind})",
        "subjects": {
            "request": "vmem.<tenant>.<agent>.<actor>.<verb>",
            "events": "vmem.<tenant>.<agent>.events",
            "tenant-wide": "vmem.<tenant>._tenant.reader.namespaces, vmem.<tenant>._grants.memory.grant",
        },
        "routes": ROUTES,
    }
    at = 0
    for name, ts in families.items():
        out[name] = {"oneOf": schemas[at : at + len(ts)]}
        at += len(ts)
    out["$defs"] = components
    return out
