"""What a client may set on a namespace: working-context slots, permissions, grants.

Each function checks a request against the state and returns the events it
comes to, or raises UsageError saying what was wrong.
"""

from __future__ import annotations

from vmem.agent.functions import MEMORY_FUNCTIONS
from vmem.errors import UsageError
from vmem.paging.handoff import GRANTS_AGENT
from vmem.schemas.events import (
    Event,
    GrantIssued,
    GrantRevoked,
    PermissionsSet,
    SlotDefined,
)
from vmem.schemas.messages import GrantRequest, PermissionsRequest, SlotRequest
from vmem.state.namespace import subject_tokens, validate_namespace


def slot_events(req: SlotRequest) -> list[Event]:
    """Define (or redefine) a slot: an identifier label, and a value within its limit."""
    if not req.label.isidentifier():
        raise UsageError(f"slot label {req.label!r} must be an identifier (letters, digits, _), for example human")
    if len(req.value) > req.limit:
        raise UsageError(f"slot {req.label!r}: the value has {len(req.value)} characters, over the limit {req.limit}")
    return [SlotDefined(ns=req.ns, label=req.label, limit=req.limit, value=req.value, readonly=req.readonly)]


def permission_events(req: PermissionsRequest) -> list[Event]:
    """Limit the memory functions a model may call (empty: all of them)."""
    unknown = sorted(set(req.allowed) - set(MEMORY_FUNCTIONS))
    if unknown:
        raise UsageError(f"unknown functions {unknown}; known: {', '.join(MEMORY_FUNCTIONS)}")
    return [PermissionsSet(ns=req.ns, allowed=tuple(dict.fromkeys(req.allowed)))]


def grant_events(req: GrantRequest) -> list[Event]:
    """A grant or revoke, recorded in the granting tenant's ``_grants`` namespace."""
    tenant, agent = subject_tokens(req.ns)
    if agent != GRANTS_AGENT:
        raise UsageError(f"grants are recorded in {tenant}/{GRANTS_AGENT}, not in {req.ns}")
    validate_namespace(f"{req.to_tenant}/x")
    if req.revoke:
        return [GrantRevoked(ns=req.ns, to_tenant=req.to_tenant)]
    agents = req.agents
    if agents != "*":
        for agent_name in agents.split(","):
            validate_namespace(f"{req.to_tenant}/{agent_name}")
    return [GrantIssued(ns=req.ns, to_tenant=req.to_tenant, agents=agents)]
