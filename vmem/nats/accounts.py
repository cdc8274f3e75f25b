"""Who is who on a vmem nats-server: the service's and each tenant's account and user, their password variables, and the tenant a request came from."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from vmem.bus.subjects import is_prefix
from vmem.errors import UsageError
from vmem.state.namespace import is_token

SERVICE_ACCOUNT = "VMEM"
SERVICE_USER = "vmem"
TENANT_ACCOUNT_PREFIX = "TENANT_"
SERVICE_PASSWORD_ENV = "VMEM_SERVICE_PASSWORD"
REQUEST_INFO_HEADER = "Nats-Request-Info"
# Routes the service's own JetStream streams listen on: exporting one would let
# tenants write into a stream without the service (the log, the jobs queue).
_STREAM_ROUTES = (re.compile(r"log\.[^.]+"), re.compile(r"compressor\.job"))


class NatsConfigError(UsageError):
    """The tenants, routes or options given cannot make a nats-server configuration."""


def tenant_account(tenant: str) -> str:
    """The NATS account of `tenant`: ``TENANT_<tenant>`` (account names are case-sensitive, as tenants are)."""
    return TENANT_ACCOUNT_PREFIX + checked_tenant(tenant)


def tenant_of_account(account: str) -> str | None:
    """The tenant whose account is `account`, or None if it is not a tenant account."""
    if account.startswith(TENANT_ACCOUNT_PREFIX):
        tenant = account[len(TENANT_ACCOUNT_PREFIX):]
        if is_token(tenant):
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
    return f"VMEM_{checked_tenant(tenant).upper().replace('-', '_')}_PASSWORD"


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


def checked_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not is_token(tenant):
        raise NatsConfigError(
            f"invalid tenant {tenant!r}: 1-64 characters from [A-Za-z0-9_-] (a namespace's first part), e.g. acme"
        )
    return tenant


def checked_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not is_prefix(prefix):
        raise NatsConfigError(f"invalid subject prefix {prefix!r}: 1-32 characters from [A-Za-z0-9-], e.g. vmem")
    return prefix


def checked_tenants(tenants: Sequence[str]) -> list[str]:
    if isinstance(tenants, str):
        raise NatsConfigError(f"tenants must be a list of names, not the string {tenants!r}")
    checked = [checked_tenant(t) for t in tenants]
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


def checked_routes(routes: Sequence[str]) -> list[str]:
    if isinstance(routes, str):
        raise NatsConfigError(f"routes must be a list of ACTOR.VERB strings, not the string {routes!r}")
    checked: list[str] = []
    for route in routes:
        parts = route.split(".") if isinstance(route, str) else []
        if len(parts) != 2 or not all(is_token(p) for p in parts):
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
