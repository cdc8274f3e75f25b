"""Passwords of a vmem deployment's NATS users: bcrypt hashes for the configuration, and random ones when asked."""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Mapping, Sequence

from vmem.nats.accounts import SERVICE_PASSWORD_ENV, SERVICE_USER, NatsConfigError, checked_tenants, password_env

BCRYPT_COST = 11
_BCRYPT_MAX_BYTES = 72


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
    users = [(SERVICE_USER, SERVICE_PASSWORD_ENV)] + [(t, password_env(t)) for t in checked_tenants(tenants)]
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
