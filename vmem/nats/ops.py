"""nats-server for a vmem deployment: one NATS account per tenant, and a check of a running server.

Layout
------
The service account (``VMEM``) holds the service's user (``vmem``: ``vmem
serve`` and the compressor workers) and owns every JetStream stream.  Each
tenant ``T`` has an account of its own (``TENANT_T``) with one user, ``T``,
and no JetStream.  The service account exports to that account only:

* for each client-facing route ``<actor>.<verb>``, the service
  ``<prefix>.T.*.<actor>.<verb>`` (requests), and
* the stream ``<prefix>.T.*.events`` (the events the service publishes),

and the tenant account imports exactly these, under the same subjects, so
client code is the same in every deployment.  A request a tenant sends on an
imported subject reaches the service with a reply subject ``_R_.<...>`` that
leads back to the tenant's account only, and a ``Nats-Request-Info`` header
``{"acc": "TENANT_T", ...}`` that the server writes (a forged one is
replaced).  Everything else a tenant publishes stays in its own account,
where nothing listens: it cannot reach the service's internal subjects (the
log's, the jobs queue's), another tenant, or any JetStream API (error 10039,
JetStream not enabled for the account).

Passwords are bcrypt hashes in the file (cost 11), or references to
environment variables (``$VMEM_T_PASSWORD``), which nats-server substitutes
when it reads the file.  nats-server parses such a variable's value as a
configuration value: a password of letters, digits, ``_`` and ``-`` that
starts with a letter can be given as it is; anything else (a bcrypt hash
included, since ``$`` would start a variable reference) must be put inside
double quotes within the variable.

:func:`check_server_setup` tells what is wrong with a running server for
vmem, from its ``/varz`` and its streams' ``STREAM.INFO``; :func:`fetch_varz`
gets ``/varz`` from the monitoring port (bound to loopback).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vmem.errors import UsageError

__all__ = [
    "BCRYPT_COST",
    "DEFAULT_MONITOR_URL",
    "DEFAULT_PREFIX",
    "DEFAULT_SERVER_NAME",
    "MIN_SERVER_VERSION",
    "MissingPassword",
    "MonitoringUnreachable",
    "NatsConfigError",
    "REQUEST_INFO_HEADER",
    "SERVICE_ACCOUNT",
    "SERVICE_PASSWORD_ENV",
    "SERVICE_USER",
    "STORE_ENV",
    "TENANT_ACCOUNT_PREFIX",
    "check_server_setup",
    "command_line",
    "config_summary",
    "fetch_varz",
    "generate_password",
    "hash_password",
    "nats_server_config",
    "password_env",
    "password_hashes",
    "request_tenant",
    "tenant_account",
    "tenant_of_account",
]

DEFAULT_PREFIX = "vmem"
"""The subject prefix of a deployment (the same default as the log's and the bus's)."""

SERVICE_ACCOUNT = "VMEM"
SERVICE_USER = "vmem"
TENANT_ACCOUNT_PREFIX = "TENANT_"
SERVICE_PASSWORD_ENV = "VMEM_SERVICE_PASSWORD"
STORE_ENV = "VMEM_NATS_STORE"
DEFAULT_SERVER_NAME = "vmem-nats-1"
BCRYPT_COST = 11
DEFAULT_MONITOR_URL = "http://127.0.0.1:8222"
REQUEST_INFO_HEADER = "Nats-Request-Info"

MIN_SERVER_VERSION = (2, 11)
"""vmem's append protocol needs Nats-Expected-Last-Subject-Sequence-Subject and batched direct gets."""

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a tenant, an agent, an actor or a verb (as vmem.state.namespace)
_PREFIX = re.compile(r"[A-Za-z0-9-]{1,32}")  # as vmem.nats.jetstream_log
_BCRYPT = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")
_BCRYPT_MAX_BYTES = 72
# Routes the service's own JetStream streams listen on: exporting one would let
# tenants write into a stream without the service (the log, the jobs queue).
_STREAM_ROUTES = (re.compile(r"log\.[^.]+"), re.compile(r"compressor\.job"))
_SERVICE_DENY = ("$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>")


class NatsConfigError(UsageError):
    """The tenants, routes or options given cannot make a nats-server configuration."""


class MissingPassword(NatsConfigError):
    """A password's environment variable is not set."""

    def __init__(self, variables: Sequence[str]) -> None:
        names = ", ".join(variables)
        super().__init__(
            f"no password for {names}: set {'it' if len(variables) == 1 else 'them'} in the environment "
            f"(the configuration gets bcrypt hashes, never the passwords), or pass --generate FILE to make "
            f"random ones, or --env-passwords to write references to the variables instead"
        )
        self.variables = list(variables)


class MonitoringUnreachable(UsageError):
    """The nats-server monitoring endpoint did not answer."""


# -- names -----------------------------------------------------------------------------


def tenant_account(tenant: str) -> str:
    """The NATS account of `tenant`: ``TENANT_<tenant>`` (account names are case-sensitive, as tenants are)."""
    return TENANT_ACCOUNT_PREFIX + _tenant(tenant)


def tenant_of_account(account: str) -> str | None:
    """The tenant whose account is `account`, or None if it is not a tenant account."""
    if account.startswith(TENANT_ACCOUNT_PREFIX):
        tenant = account[len(TENANT_ACCOUNT_PREFIX):]
        if _TOKEN.fullmatch(tenant):
            return tenant
    return None


def password_env(tenant: str | None) -> str:
    """The environment variable holding a password: ``VMEM_<TENANT>_PASSWORD``, or the service's for None.

    The tenant is upper-cased and ``-`` becomes ``_``, so some tenants share a
    variable (``my-co``, ``my_co``, ``MY_CO``); :func:`nats_server_config`
    refuses such a set of tenants.
    """
    if tenant is None:
        return SERVICE_PASSWORD_ENV
    return f"VMEM_{_tenant(tenant).upper().replace('-', '_')}_PASSWORD"


def request_tenant(headers: Mapping[str, str] | None) -> str | None:
    """The tenant that sent a request through its account's import, from ``Nats-Request-Info``.

    nats-server sets that header on every message crossing a service import
    (replacing one the sender wrote), with the sending account in ``acc``.
    None if there is no such header (the sender is in the service's own
    account) or its account is not a tenant's.
    """
    if not headers:
        return None
    raw = headers.get(REQUEST_INFO_HEADER)
    if not raw:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    account = info.get("acc") if isinstance(info, dict) else None
    return tenant_of_account(account) if isinstance(account, str) else None


def _tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TOKEN.fullmatch(tenant):
        raise NatsConfigError(
            f"invalid tenant {tenant!r}: 1-64 characters from [A-Za-z0-9_-] (a namespace's first part), e.g. acme"
        )
    return tenant


def _prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise NatsConfigError(f"invalid subject prefix {prefix!r}: 1-32 characters from [A-Za-z0-9-], e.g. vmem")
    return prefix


def _tenants(tenants: Sequence[str]) -> list[str]:
    if isinstance(tenants, str):
        raise NatsConfigError(f"tenants must be a list of names, not the string {tenants!r}")
    checked = [_tenant(t) for t in tenants]
    if not checked:
        raise NatsConfigError("no tenant given: name each tenant with --tenant NAME (repeatable)")
    seen: dict[str, str] = {}
    variables = {SERVICE_PASSWORD_ENV: "the service"}
    for tenant in checked:
        if tenant in seen:
            raise NatsConfigError(f"tenant {tenant!r} is given twice; give each tenant once")
        seen[tenant] = tenant
        if tenant == SERVICE_USER:
            raise NatsConfigError(
                f"a tenant may not be named {SERVICE_USER!r}: that is the service's user, and nats-server needs "
                f"user names unique across accounts; choose another tenant name"
            )
        variable = password_env(tenant)
        if variable in variables:
            raise NatsConfigError(
                f"tenant {tenant!r} would take its password from {variable}, as {variables[variable]} does "
                f"(variables are upper-cased, '-' becomes '_'); rename one of them"
            )
        variables[variable] = f"tenant {tenant!r}"
    return checked


def _routes(routes: Sequence[str]) -> list[str]:
    if isinstance(routes, str):
        raise NatsConfigError(f"routes must be a list of ACTOR.VERB strings, not the string {routes!r}")
    checked: list[str] = []
    for route in routes:
        parts = route.split(".") if isinstance(route, str) else []
        if len(parts) != 2 or not all(_TOKEN.fullmatch(p) for p in parts):
            raise NatsConfigError(
                f"invalid route {route!r}: expected ACTOR.VERB, two tokens of 1-64 characters from "
                f"[A-Za-z0-9_-] and no wildcards, e.g. pager.turn"
            )
        if any(p.fullmatch(route) for p in _STREAM_ROUTES):
            raise NatsConfigError(
                f"route {route!r} is a subject a vmem JetStream stream listens on (the log, or the compressor "
                f"jobs): tenants must reach it only through the service, so it cannot be exported"
            )
        if route in checked:
            raise NatsConfigError(f"route {route!r} is given twice; give each route once")
        checked.append(route)
    if not checked:
        raise NatsConfigError("no route given: name each client-facing ACTOR.VERB with --route (repeatable)")
    return checked


# -- passwords ----------------------------------------------------------------------------


def hash_password(password: str, *, cost: int = BCRYPT_COST) -> str:
    """A bcrypt hash of `password`, as nats-server checks it (``$2b$11$...``)."""
    import bcrypt

    raw = password.encode()
    if not raw:
        raise NatsConfigError("an empty password cannot be used: set a non-empty one")
    if len(raw) > _BCRYPT_MAX_BYTES:
        raise NatsConfigError(
            f"a password of {len(raw)} bytes is too long for bcrypt (at most {_BCRYPT_MAX_BYTES}): use a shorter one"
        )
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=cost)).decode()


def generate_password() -> str:
    """A random password (about 190 bits) that is also a valid bare nats-server configuration value.

    Letters and digits only, starting with a letter, so it can stand in an
    environment variable that the configuration references, and in a URL.
    """
    alphabet = string.ascii_letters + string.digits
    return secrets.choice(string.ascii_letters) + "".join(secrets.choice(alphabet) for _ in range(31))


def password_hashes(
    tenants: Sequence[str],
    environ: Mapping[str, str] | None = None,
    *,
    generate: bool = False,
    cost: int = BCRYPT_COST,
) -> tuple[dict[str, str], dict[str, str]]:
    """Bcrypt hashes of the service's and the tenants' passwords, taken from `environ` (default: os.environ).

    Returns ``(hashes, generated)``: ``hashes`` maps each user (``vmem``, then
    each tenant) to its hash, for :func:`nats_server_config`;
    ``generated`` maps each variable that was not set to the random password
    made for it, if `generate` (otherwise a missing variable raises
    :class:`MissingPassword`, naming every missing one).
    """
    env = os.environ if environ is None else environ
    users = [(SERVICE_USER, SERVICE_PASSWORD_ENV)] + [(t, password_env(t)) for t in _tenants(tenants)]
    missing = [variable for _, variable in users if not env.get(variable)]
    if missing and not generate:
        raise MissingPassword(missing)
    generated = {variable: generate_password() for variable in missing}
    hashes: dict[str, str] = {}
    for user, variable in users:
        password = generated.get(variable) or env[variable]
        try:
            hashes[user] = hash_password(password, cost=cost)
        except NatsConfigError as exc:
            raise NatsConfigError(f"{variable}: {exc.message}") from None
    return hashes, generated


# -- the configuration ------------------------------------------------------------------------


def _q(value: str) -> str:
    """A double-quoted configuration string (no variable substitution inside quotes)."""
    return json.dumps(value)


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _comment(text: str, indent: str = "") -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in textwrap.wrap(text, 88 - len(indent), break_on_hyphens=False)]


def command_line(tenants: Sequence[str], routes: Sequence[str], *, prefix: str, env_passwords: bool,
                 server_name: str) -> list[str]:
    """The ``vmem ops nats-config`` command that generates this configuration, one option per item."""
    words = ["vmem ops nats-config"] + [f"--tenant {t}" for t in tenants]
    if env_passwords:
        words.append("--env-passwords")
    if prefix != DEFAULT_PREFIX:
        words.append(f"--prefix {prefix}")
    if server_name != DEFAULT_SERVER_NAME:
        words.append(f"--server-name {server_name}")
    return words + [f"--route {r}" for r in routes]


def nats_server_config(
    tenants: Sequence[str],
    routes: Sequence[str],
    *,
    prefix: str = DEFAULT_PREFIX,
    password_hashes: Mapping[str, str] | None = None,
    server_name: str = DEFAULT_SERVER_NAME,
) -> str:
    """The nats-server configuration of a vmem deployment with these tenants (see the module docstring).

    `routes` are the client-facing ``ACTOR.VERB`` of the service, the only
    request subjects tenants can reach.  `password_hashes` maps each user
    (``vmem`` and every tenant) to a bcrypt hash (:func:`password_hashes`);
    without it, passwords are references to ``$VMEM_SERVICE_PASSWORD`` and
    ``$VMEM_<TENANT>_PASSWORD``.  The store directory is always
    ``$VMEM_NATS_STORE``.  The same arguments give the same text.
    """
    prefix = _prefix(prefix)
    tenants = _tenants(tenants)
    routes = _routes(routes)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", server_name or ""):
        raise NatsConfigError(f"invalid server name {server_name!r}: 1-64 characters from [A-Za-z0-9_-]")
    users = [SERVICE_USER, *tenants]
    if password_hashes is not None:
        missing = [u for u in users if u not in password_hashes]
        if missing:
            raise NatsConfigError(f"no password hash for user(s) {', '.join(missing)}")
        for user in users:
            if not _BCRYPT.fullmatch(password_hashes[user]):
                raise NatsConfigError(
                    f"the password of user {user!r} is not a bcrypt hash: pass hashes (hash_password), never "
                    f"passwords, so that no password is written into the configuration"
                )

    def password(user: str, tenant: str | None) -> str:
        if password_hashes is None:
            return "$" + password_env(tenant)
        return _q(password_hashes[user])

    variables = [STORE_ENV] + ([SERVICE_PASSWORD_ENV] + [password_env(t) for t in tenants] if password_hashes is None else [])
    command = command_line(tenants, routes, prefix=prefix, env_passwords=password_hashes is None, server_name=server_name)
    out: list[str] = ["# nats-server configuration of a vmem deployment (nats-server 2.11 or newer), generated by"]
    line = "#  "
    for word in command:
        if len(line) + 1 + len(word) > 88 and line.strip("# "):
            out.append(line + " \\")
            line = "#    "
        line += " " + word
    out.append(line)
    out += ["# Regenerate it rather than edit it (ops/README.md)."]
    out += ["#"]
    out += _comment(
        f"One NATS account per tenant.  The service account {SERVICE_ACCOUNT} owns every JetStream stream; a "
        f"tenant's account has no JetStream and reaches the service only through the request subjects "
        f"{SERVICE_ACCOUNT} exports to it, which arrive stamped with the tenant's account (Nats-Request-Info)."
    )
    out += _comment(f"From the environment: {', '.join(variables)}.")
    if password_hashes is None:
        out += _comment(
            "nats-server reads each password variable as a configuration value: letters, digits, '_' and '-' "
            "starting with a letter as they are, anything else (a bcrypt hash too) inside double quotes, "
            "e.g. VMEM_ACME_PASSWORD='\"$2b$11$...\"'."
        )
    else:
        out += _comment(f"Passwords are bcrypt hashes (cost {BCRYPT_COST}); the passwords themselves are not in this file.")
    out += [
        "",
        f"server_name: {server_name}",
        "listen: 0.0.0.0:4222",
        "# Monitoring (/healthz, /varz, /jsz), on loopback only.",
        "http: 127.0.0.1:8222",
        "# One vmem append is one message; an ingest appends up to ~1,000 pages at once.",
        "max_payload: 8MB",
        "",
        "jetstream {",
        f"  store_dir: ${STORE_ENV}",
        "  # Sync every write to disk before acknowledging it: the default (every 2 minutes)",
        "  # can lose acknowledged writes on power loss.  vmem treats an acknowledged append as durable.",
        "  sync_interval: always",
        "}",
        "",
        "accounts {",
    ]
    out += _comment(
        f"The service: vmem serve and the compressor workers.  Owns the streams (the logs "
        f"{prefix.upper()}_<tenant>, the compressor jobs); no user may delete or purge a stream or a message.",
        "  ",
    )
    out += [
        f"  {SERVICE_ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
        "      {",
        f"        user: {_q(SERVICE_USER)}",
        f"        password: {password(SERVICE_USER, None)}",
        "        permissions: {",
        "          publish: {",
        "            allow: [\">\"]",
        f"            deny: {_list(_SERVICE_DENY)}",
        "          }",
        "        }",
        "      }",
        "    ]",
        "    # Per tenant, to that tenant's account only: its client-facing requests, and its events.",
        "    exports: [",
    ]
    for tenant in tenants:
        account = _list([tenant_account(tenant)])
        out += [f"      # {tenant}"]
        out += [f"      {{ service: {_q(f'{prefix}.{tenant}.*.{route}')}, accounts: {account} }}" for route in routes]
        out += [f"      {{ stream: {_q(f'{prefix}.{tenant}.*.events')}, accounts: {account} }}"]
    out += ["    ]", "  }"]
    for tenant in tenants:
        out += [""]
        out += _comment(
            f"Tenant {tenant}: one user, no JetStream; what it publishes off its imports stays here.", "  "
        )
        out += [
            f"  {tenant_account(tenant)} {{",
            f"    users: [ {{ user: {_q(tenant)}, password: {password(tenant, tenant)} }} ]",
            "    imports: [",
        ]
        out += [
            f"      {{ service: {{ account: {_q(SERVICE_ACCOUNT)}, subject: {_q(f'{prefix}.{tenant}.*.{route}')} }} }}"
            for route in routes
        ]
        out += [f"      {{ stream: {{ account: {_q(SERVICE_ACCOUNT)}, subject: {_q(f'{prefix}.{tenant}.*.events')} }} }}"]
        out += ["    ]", "  }"]
    out += ["}"]
    return "\n".join(out) + "\n"


def config_summary(
    tenants: Sequence[str],
    routes: Sequence[str],
    *,
    prefix: str = DEFAULT_PREFIX,
    env_passwords: bool,
    server_name: str = DEFAULT_SERVER_NAME,
) -> dict[str, Any]:
    """What :func:`nats_server_config` lays out, as JSON-ready data (``vmem ops nats-config --json``)."""
    prefix = _prefix(prefix)
    tenants = _tenants(tenants)
    routes = _routes(routes)
    return {
        "server_name": server_name,
        "prefix": prefix,
        "passwords": "environment" if env_passwords else f"bcrypt (cost {BCRYPT_COST})",
        "environment": [STORE_ENV] + ([SERVICE_PASSWORD_ENV] + [password_env(t) for t in tenants] if env_passwords else []),
        "listen": "0.0.0.0:4222",
        "monitoring": "127.0.0.1:8222",
        "service": {"account": SERVICE_ACCOUNT, "user": SERVICE_USER, "password_env": SERVICE_PASSWORD_ENV, "jetstream": True},
        "tenants": [
            {
                "tenant": t,
                "account": tenant_account(t),
                "user": t,
                "password_env": password_env(t),
                "jetstream": False,
                "requests": [f"{prefix}.{t}.*.{r}" for r in routes],
                "events": f"{prefix}.{t}.*.events",
            }
            for t in tenants
        ],
    }


# -- checking a running server ------------------------------------------------------------------


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
