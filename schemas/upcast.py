"""Upcasters: turn an older version of an event (as a plain dict) into the current one.

Keyed by (event tag, version it upgrades *from*).  A chain applies one step at
a time until the event reaches its class's ``VERSION``.
"""

from __future__ import annotations

from typing import Any, Callable

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _page_evicted_v1(d: dict[str, Any]) -> dict[str, Any]:
    # v1 called the eviction policy `policy`; v2 calls it `reason`.
    d = dict(d)
    if "policy" in d:
        d["reason"] = d.pop("policy")
    return d


def _summary_committed_v1(d: dict[str, Any]) -> dict[str, Any]:
    # v1 marked a conversation summary by its job id ("flush:..."); v2 has `scope`.
    d = dict(d)
    d["scope"] = "conversation" if str(d.get("job_id", "")).startswith("flush:") else "pages"
    return d


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("page_evicted", 1): _page_evicted_v1,
    ("summary_committed", 1): _summary_committed_v1,
}
