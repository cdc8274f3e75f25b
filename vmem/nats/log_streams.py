"""The log's JetStream streams, one per tenant: their configuration, creation, listing, and frames read from them by direct get."""

from __future__ import annotations

from typing import Any

from vmem.bus.subjects import DEFAULT_PREFIX, Subjects
from vmem.errors import LogError, UsageError
from vmem.nats.admin import JetStreamAdmin, Transient
from vmem.nats.direct import DirectGets, status_of
from vmem.nats.frames import Frame, decode_frame
from vmem.state.namespace import subject_tokens

Located = tuple[int, Frame]  # a frame and the stream sequence it is stored at


def stream_name(tenant: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The JetStream stream holding `tenant`'s log: ``VMEM_<tenant>`` for the default prefix."""
    return f"{prefix.upper()}_{tenant}"


class LogStreams:
    """The tenants' log streams as one deployment (`subjects`) lays them out.

    Remembers which streams are known to exist, and whether each announces
    its appends on ``<prefix>.T.A.head`` (the head cache needs that), so a
    hot path asks the server about a stream once.
    """

    def __init__(self, admin: JetStreamAdmin, direct: DirectGets, subjects: Subjects, *, replicas: int,
                 duplicate_window: float) -> None:
        self._admin = admin
        self._direct = direct
        self.subjects = subjects
        self._replicas = replicas
        self._window = duplicate_window
        self._known: dict[str, bool] = {}  # stream -> whether it announces its appends

    def name(self, tenant: str) -> str:
        return stream_name(tenant, self.subjects.prefix)

    def config(self, tenant: str) -> dict[str, Any]:
        """The configuration vmem creates a tenant's stream with."""
        return {
            "name": self.name(tenant),
            "description": f"vmem event log of tenant {tenant}",
            "subjects": [self.subjects.tenant_logs(tenant)],
            "retention": "limits", "storage": "file", "num_replicas": self._replicas, "discard": "old",
            "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msgs_per_subject": -1, "max_msg_size": -1,
            "duplicate_window": int(self._window * 1e9),
            "allow_direct": True, "deny_delete": True, "deny_purge": True,
            # After storing a frame, announce it (headers only) on <prefix>.T.A.head.
            "republish": {"src": self.subjects.tenant_logs(tenant), "dest": self.subjects.head_template(tenant),
                          "headers_only": True},
        }

    def announces(self, tenant: str) -> bool:
        """Whether `tenant`'s stream (known to exist) announces its appends."""
        return self._known[self.name(tenant)]

    def forget(self, tenant: str) -> None:
        """Ask the server again next time: the stream may have gone (an unknown outcome, a restart)."""
        self._known.pop(self.name(tenant), None)

    def _remember(self, stream: str, config: dict[str, Any]) -> None:
        if not config.get("allow_direct"):
            raise LogError(f"stream {stream} does not allow direct gets: update it with allow_direct=true (vmem reads with direct gets)")
        republish = config.get("republish") or {}
        self._known[stream] = bool(republish.get("headers_only")) and str(republish.get("dest", "")).endswith(".head")

    async def exists(self, tenant: str) -> bool:
        stream = self.name(tenant)
        if stream in self._known:
            return True
        info = await self._admin.stream_info(stream)
        if info is None:
            return False
        self._remember(stream, info.get("config") or {})
        return True

    async def ensure(self, tenant: str) -> None:
        """Create `tenant`'s stream unless it exists (refused without the service's credentials)."""
        stream = self.name(tenant)
        if stream in self._known:
            return
        config = await self._admin.ensure_stream(self.config(tenant), refused=(
            f"the stream {stream} of tenant {tenant!r} does not exist and these credentials may not create it: "
            f"start `vmem serve --ns {tenant}/*` (it creates the streams of the tenants it serves)"))
        self._remember(stream, config)

    async def reported_config(self, tenant: str) -> dict[str, Any]:
        """The configuration of `tenant`'s stream as the server reports it ({} if it has none)."""
        info = await self._admin.retrying(f"stream of {tenant}", lambda: self._admin.stream_info(self.name(tenant)))
        return dict((info or {}).get("config") or {})

    async def tenants(self) -> list[str]:
        """Every tenant with a log stream under this prefix."""
        lead = f"{self.subjects.prefix.upper()}_"
        tenants = []
        for name in await self._admin.stream_names(self.subjects.all_logs()):
            if name.startswith(lead):
                try:
                    tenants.append(subject_tokens(f"{name[len(lead):]}/x")[0])
                except UsageError:
                    continue
        return sorted(tenants)

    async def agents(self, tenant: str) -> list[str]:
        """The agents of `tenant` whose logs hold frames."""
        subjects = await self._admin.stream_subjects(self.name(tenant), self.subjects.tenant_logs(tenant))
        return sorted({s.split(".")[2] for s in subjects})

    # -- frames, by direct get ----------------------------------------------------------------

    async def batch(self, tenant: str, request: dict[str, Any]) -> tuple[list[Located], bool]:
        """The frames a direct-get batch `request` returns, and whether more match."""
        stream = self.name(tenant)
        if not await self.exists(tenant):
            return [], False
        try:
            msgs = await self._direct.get(stream, request)
        except Transient:
            self.forget(tenant)
            if not await self.exists(tenant):
                return [], False  # no stream: nothing to read
            raise
        frames: list[Located] = []
        more = False
        for msg in msgs:
            status = status_of(stream, msg)
            if status == "204":
                more = int(msg.headers.get("Nats-Num-Pending", "0")) > 0
            elif status is None:
                frames.append(_frame_of(msg))
        return frames, more

    async def last_frame(self, tenant: str, subject: str, *, decode: bool = True) -> Located | None:
        """The last frame on `subject` (with decode=False, only its stream sequence is real)."""
        if not await self.exists(tenant):
            return None
        stream = self.name(tenant)
        msg = (await self._direct.get(stream, None, last_subject=subject))[-1]
        if status_of(stream, msg) is not None:
            return None
        if not decode:
            return int(msg.headers["Nats-Sequence"]), Frame(1, None, "", [])
        return _frame_of(msg)

    async def frame_at(self, tenant: str, seq: int) -> Located | None:
        """The frame at stream sequence `seq`, if there is one."""
        stream = self.name(tenant)
        msg = (await self._admin.retrying(f"read of {stream}", lambda: self._direct.get(stream, {"seq": seq})))[-1]
        if status_of(stream, msg) is not None:
            return None
        return _frame_of(msg)


def _frame_of(msg: Any) -> Located:
    seq = int(msg.headers["Nats-Sequence"])
    return seq, decode_frame(seq, msg.data)
