"""The nats-server configuration of a vmem deployment: one NATS account per tenant.

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
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vmem.bus.subjects import DEFAULT_PREFIX
from vmem.nats.accounts import (
    SERVICE_ACCOUNT,
    SERVICE_PASSWORD_ENV,
    SERVICE_USER,
    NatsConfigError,
    checked_prefix,
    checked_routes,
    checked_tenants,
    password_env,
    tenant_account,
)
from vmem.nats.passwords import BCRYPT_COST

STORE_ENV = "VMEM_NATS_STORE"
DEFAULT_SERVER_NAME = "vmem-nats-1"
_BCRYPT = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")
_SERVICE_DENY = ("$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>")


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
    prefix = checked_prefix(prefix)
    tenants = checked_tenants(tenants)
    routes = checked_routes(routes)
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
    prefix = checked_prefix(prefix)
    tenants = checked_tenants(tenants)
    routes = checked_routes(routes)
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
