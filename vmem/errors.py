"""vmem's error hierarchy.

Every error vmem raises on purpose derives from :class:`VmemError`.  Each
message says what was wrong and what to do about it; the CLI prints the
message and exits with :attr:`VmemError.exit_code`.
"""

from __future__ import annotations


class VmemError(Exception):
    """Base class of every error vmem raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(VmemError):
    """The caller asked for something that cannot be done as asked."""

    exit_code = 2


class InvalidNamespace(UsageError):
    """A namespace is not `TENANT/AGENT` with two valid subject tokens."""


class UnknownNamespace(UsageError):
    """A namespace has no events in this home."""


class UnknownBlock(UsageError):
    """A block id is not in the store of this namespace."""


class UnknownTurn(UsageError):
    """A turn number has no recorded trace."""


class InputError(UsageError):
    """Input to ingest cannot be used (empty, binary, not UTF-8, too large)."""


class EmbedderMismatch(UsageError):
    """A namespace's indexes were built with another embedder than the one in use.

    Vectors of different embedders are not comparable, so vmem neither mixes
    them nor re-embeds a namespace behind the caller's back: use the recorded
    embedder, or re-index the namespace explicitly (``vmem reindex``).  The
    attributes are empty when the error crossed the bus (only its message does).
    """

    def __init__(self, message: str, *, ns: str = "", recorded: str = "", in_use: str = "") -> None:
        super().__init__(message)
        self.ns = ns
        self.recorded = recorded
        self.in_use = in_use


class HomeError(VmemError):
    """The vmem home directory is missing, not initialised, or damaged."""


class SchemaError(VmemError):
    """Bytes do not decode to a known event or message of a known version."""


class LogError(VmemError):
    """Base class of event-log failures."""


class ConcurrencyConflict(LogError):
    """An append named an expected last sequence that is no longer the last."""

    def __init__(self, namespace: str, expected: int, actual: int) -> None:
        super().__init__(
            f"append to {namespace!r} expected last sequence {expected} but the log is at "
            f"{actual}: another writer appended first; re-read the state and retry"
        )
        self.namespace = namespace
        self.expected = expected
        self.actual = actual


class CorruptRecord(LogError):
    """A stored log record fails its checksum or cannot be decoded."""

    def __init__(self, sequence: int, detail: str) -> None:
        super().__init__(
            f"log record at sequence {sequence} is corrupt ({detail}); restore the home "
            f"from a backup or truncate the log before this sequence"
        )
        self.sequence = sequence
        self.detail = detail


class BusError(VmemError):
    """Base class of bus failures."""


class NoResponders(BusError):
    """A request was sent to a subject nobody serves."""


class RequestTimeout(BusError):
    """A request got no reply in time."""


class AccessDenied(VmemError):
    """What was asked crosses a boundary the caller may not cross.

    Raised when the NATS server refuses a subject or stream to these
    credentials (another tenant's), when a log bound to some tenants is asked
    about another, and when a hand-off crosses tenants without the source
    tenant's grant.
    """


class ActorError(VmemError):
    """An actor answered a request with an error."""


class ModelError(VmemError):
    """A model adapter failed (transport, HTTP status, or malformed response)."""


class BudgetError(UsageError):
    """A token budget is too small to hold even the mandatory prompt parts."""


def from_reply(code: str, message: str, where: str) -> VmemError:
    """The error a caller raises for an actor's ErrorReply: the class its code names, with its message.

    Conflicts and corrupt records inside the service, and internal errors,
    reach the caller as ActorError: they are the service's to handle.
    """
    cls = globals().get(code)
    if not (isinstance(cls, type) and issubclass(cls, VmemError)) or code == "internal":
        return ActorError(f"{where}: {message}")
    if cls in (ConcurrencyConflict, CorruptRecord):
        return ActorError(f"{where}: {message}")
    return cls(message)


def lone_error(group: BaseExceptionGroup) -> BaseException:
    """The one error inside a (nested) exception group, or the group if it holds several.

    Task groups wrap what their tasks raise; a single vmem error is reported
    to the user as itself.
    """
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        else:
            leaves.append(e)
    return leaves[0] if len(leaves) == 1 else group
