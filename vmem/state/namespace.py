"""Namespaces: `TENANT/AGENT`, each part one NATS subject token."""

from __future__ import annotations

import re

from vmem.errors import InvalidNamespace

# A subject token may not hold '.', '*', '>' or whitespace; we are stricter and
# allow a conservative alphabet so a namespace is also safe as a file name part
# and a JetStream stream name.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_token(text: str) -> bool:
    """Whether `text` may be a namespace part (and so a subject token): 1-64 of [A-Za-z0-9_-]."""
    return isinstance(text, str) and _TOKEN.fullmatch(text) is not None


def validate_namespace(ns: str) -> str:
    """Return `ns` unchanged if it is `TENANT/AGENT`, else raise InvalidNamespace."""
    parts = ns.split("/") if isinstance(ns, str) else []
    if len(parts) != 2 or not all(_TOKEN.fullmatch(p) for p in parts):
        raise InvalidNamespace(
            f"invalid namespace {ns!r}: expected TENANT/AGENT, two parts of 1-64 characters "
            f"from [A-Za-z0-9_-] (no '.', '*', '>' or spaces), for example acme/agent7"
        )
    return ns


def subject_tokens(ns: str) -> tuple[str, str]:
    """The two subject tokens of a validated namespace."""
    tenant, agent = validate_namespace(ns).split("/")
    return tenant, agent
