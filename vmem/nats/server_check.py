"""What is wrong with a running nats-server for vmem, from its monitoring endpoint and its streams' info."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from vmem.errors import UsageError

DEFAULT_MONITOR_URL = "http://127.0.0.1:8222"
MIN_SERVER_VERSION = (2, 11)
"""vmem's append protocol needs Nats-Expected-Last-Subject-Sequence-Subject and batched direct gets."""


class MonitoringUnreachable(UsageError):
    """The nats-server monitoring endpoint did not answer."""


def _version(text: str) -> tuple[int, ...] | None:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    return tuple(int(g or 0) for g in m.groups()) if m else None


def check_server_setup(varz: Mapping[str, Any], streams: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """What is wrong with a nats-server for vmem, as sentences; empty if nothing is.

    `varz` is the server's ``/varz`` (:func:`fetch_varz`); `streams` are the
    replies of ``$JS.API.STREAM.INFO.<name>`` (or just their ``config``) of
    the streams vmem relies on: each must be stored in files, with
    ``deny_delete`` and ``deny_purge``.  Also checked: a server version of at
    least 2.11 and JetStream syncing every write (``sync_interval: always``).
    """
    problems: list[str] = []
    raw_version = str(varz.get("version") or "")
    version = _version(raw_version)
    if version is None:
        problems.append(f"the server reports no version ({raw_version!r}); vmem needs nats-server 2.11 or newer")
    elif version[:2] < MIN_SERVER_VERSION:
        problems.append(
            f"nats-server {raw_version} is too old: vmem needs 2.11 or newer (its appends use "
            f"Nats-Expected-Last-Subject-Sequence-Subject and batched direct gets); upgrade the server"
        )
    jetstream = varz.get("jetstream") or {}
    config = jetstream.get("config") if isinstance(jetstream, Mapping) else None
    if not config:
        problems.append("JetStream is not enabled on the server: add a jetstream { ... } block (ops/nats-server.conf)")
    elif config.get("sync_always") is not True:
        interval = config.get("sync_interval")
        every = f"every {interval / 1e9:g} s" if isinstance(interval, (int, float)) and interval > 0 else "periodically"
        problems.append(
            f"JetStream syncs its files {every}, not on every write: a power loss can lose appends it already "
            f"acknowledged; set sync_interval: always in the jetstream block"
        )
    for info in streams:
        stream = info.get("config", info)
        name = stream.get("name", "?")
        storage = stream.get("storage")
        if storage != "file":
            problems.append(
                f"stream {name} is stored in {storage or 'an unknown storage'}, not in files: it does not survive a "
                f"server restart; recreate it with file storage"
            )
        lacks = [flag for flag in ("deny_delete", "deny_purge") if not stream.get(flag)]
        if lacks:
            problems.append(
                f"stream {name} lacks {' and '.join(lacks)}: its messages can be deleted through the JetStream API; "
                f"update it with {' and '.join(f'{f}=true' for f in lacks)} (e.g. nats stream edit {name})"
            )
    return problems


async def fetch_varz(monitor_url: str = DEFAULT_MONITOR_URL, *, timeout: float = 5.0) -> dict[str, Any]:
    """The server's ``/varz`` from its monitoring endpoint (``http: 127.0.0.1:8222`` in ops/nats-server.conf)."""
    import httpx

    url = monitor_url.rstrip("/") + "/varz"
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        raise MonitoringUnreachable(
            f"cannot reach the nats-server monitoring endpoint at {url} ({type(exc).__name__}: {exc}); it is bound "
            f"to loopback (http: 127.0.0.1:8222), so check from the server's host (or its network namespace), "
            f"or give the right monitoring URL"
        ) from None
    if response.status_code != 200:
        raise MonitoringUnreachable(f"{url} answered HTTP {response.status_code}: is this a nats-server monitoring port?")
    try:
        varz = response.json()
    except ValueError:
        varz = None
    if not isinstance(varz, dict) or "version" not in varz:
        raise MonitoringUnreachable(f"{url} did not answer with nats-server's /varz JSON: is this its monitoring port?")
    return varz
