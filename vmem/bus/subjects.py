"""Every NATS subject vmem uses, built and parsed in one place, under a deployment's prefix.

``<prefix>.<tenant>.<agent>.<actor>.<verb>``  a request to an actor
``<prefix>.<tenant>.<agent>.events``          committed events, announced
``<prefix>.<tenant>.<agent>.log.<token>``     the JetStream log (the service's only)
``<prefix>.<tenant>.<agent>.head``            the log's append announcements (headers only)
``<prefix>.<tenant>.<agent>.compressor.job``  the compressor work queue (and ``.dead``)

The prefix (``vmem`` unless a deployment picks another) separates
deployments that share a NATS server; everything vmem subscribes to,
publishes, stores or exports is under it.
"""

from __future__ import annotations

import re

from vmem.errors import UsageError
from vmem.state.namespace import subject_tokens, validate_namespace

DEFAULT_PREFIX = "vmem"
_PREFIX = re.compile(r"[A-Za-z0-9-]{1,32}")


def is_prefix(prefix: str) -> bool:
    """Whether `prefix` may be a deployment's subject prefix: 1-32 of [A-Za-z0-9-]."""
    return isinstance(prefix, str) and _PREFIX.fullmatch(prefix) is not None


def check_prefix(prefix: str) -> str:
    """`prefix` if it is a valid deployment prefix (1-32 of [A-Za-z0-9-]), else UsageError."""
    if not is_prefix(prefix):
        raise UsageError(f"invalid subject prefix {prefix!r}: 1-32 characters from [A-Za-z0-9-]")
    return prefix


def namespace_pattern(ns: str) -> str:
    """Subject tokens for a namespace or a wildcard: ``acme/agent7``, ``acme/*`` or ``*/*``."""
    if ns == "*/*":
        return "*.*"
    if isinstance(ns, str) and ns.endswith("/*"):
        return f"{subject_tokens(ns[:-1] + 'x')[0]}.*"
    return validate_namespace(ns).replace("/", ".")


class Subjects:
    """The subjects of one deployment (see the module docstring)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = check_prefix(prefix)

    def __repr__(self) -> str:
        return f"Subjects({self.prefix!r})"

    def _ns(self, ns: str) -> str:
        tenant, agent = subject_tokens(ns)
        return f"{self.prefix}.{tenant}.{agent}"

    # -- the actors ----------------------------------------------------------------

    def request(self, ns: str, actor: str, verb: str) -> str:
        """Where a request to `actor`'s `verb` for `ns` goes."""
        return f"{self._ns(ns)}.{actor}.{verb}"

    def route(self, namespaces: str, actor: str, verb: str) -> str:
        """The pattern an actor subscribes to for the namespaces it serves (``acme/*``, ``*/*``...)."""
        return f"{self.prefix}.{namespace_pattern(namespaces)}.{actor}.{verb}"

    def events(self, ns: str) -> str:
        """Where the actors announce what they committed to `ns`."""
        return f"{self._ns(ns)}.events"

    def namespace_of(self, subject: str) -> str:
        """The namespace a subject of this deployment is about; UsageError if it is no such subject."""
        parts = subject.split(".")
        if len(parts) < 4 or parts[0] != self.prefix:
            raise UsageError(f"{subject!r} is not a subject of the deployment {self.prefix!r}")
        return validate_namespace(f"{parts[1]}/{parts[2]}")

    # -- JetStream ----------------------------------------------------------------------

    def log(self, ns: str, token: str) -> str:
        """One of `ns`'s log subjects: ``_`` for unkeyed appends, ``k<hash>`` per idempotency key."""
        return f"{self._ns(ns)}.log.{token}"

    def log_filter(self, ns: str) -> str:
        return f"{self._ns(ns)}.log.*"

    def tenant_logs(self, tenant: str) -> str:
        """The subjects of a tenant's log stream."""
        return f"{self.prefix}.{subject_tokens(f'{tenant}/x')[0]}.*.log.*"

    def all_logs(self) -> str:
        return f"{self.prefix}.*.*.log.*"

    def head_template(self, tenant: str) -> str:
        """The stream's republish destination: each stored append announced on its namespace's head."""
        return f"{self.prefix}.{subject_tokens(f'{tenant}/x')[0]}.{{{{wildcard(1)}}}}.head"

    def tenant_heads(self, tenant: str) -> str:
        return f"{self.prefix}.{subject_tokens(f'{tenant}/x')[0]}.*.head"

    def job(self, ns: str) -> str:
        return f"{self._ns(ns)}.compressor.job"

    def all_jobs(self) -> str:
        return f"{self.prefix}.*.*.compressor.job"

    def dead(self, ns: str) -> str:
        return f"{self._ns(ns)}.compressor.dead"

    def all_dead(self) -> str:
        return f"{self.prefix}.*.*.compressor.dead"
