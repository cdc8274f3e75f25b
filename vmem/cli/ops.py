"""CLI for operating a distributed deployment: ``vmem ops nats-config``.

A thin shell over :mod:`vmem.nats.server_config` and :mod:`vmem.nats.passwords`.  Synchronous (no event loop, no
home): the command only writes text.  Errors are
:class:`~vmem.errors.UsageError` subclasses, which ``vmem`` prints and exits
with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vmem.bus.subjects import DEFAULT_PREFIX
from vmem.nats.accounts import NatsConfigError, password_env
from vmem.nats.passwords import BCRYPT_COST, generate_password, password_hashes
from vmem.nats.server_config import DEFAULT_SERVER_NAME, config_summary, nats_server_config

__all__ = ["add_ops_commands", "cmd_nats_config"]

_DESCRIPTION = f"""\
Write the nats-server configuration of a vmem deployment: one NATS account per
tenant (TENANT_<name>, one user <name>, no JetStream) and the service's account
VMEM (user vmem, every stream).  Each tenant can reach only its own
client-facing requests (<prefix>.<tenant>.*.<route>, one --route each) and
receive only its own events (<prefix>.<tenant>.*.events); the server stamps
every request with the tenant's account.

Passwords: by default, bcrypt hashes (cost {BCRYPT_COST}) of the passwords in
VMEM_SERVICE_PASSWORD and VMEM_<TENANT>_PASSWORD (the tenant upper-cased, '-'
as '_'); a variable that is not set is an error, unless --generate FILE makes
a random password for it.  With --env-passwords the file names the variables
instead ($VMEM_ACME_PASSWORD...) and nats-server reads them when it starts.
The store directory is always $VMEM_NATS_STORE.  See ops/README.md.
"""

_EPILOG = """\
examples:
  vmem ops nats-config --tenant acme --tenant globex --route pager.turn --out nats-server.conf
  vmem ops nats-config --tenant acme --env-passwords --route pager.turn > nats-server.conf
  vmem ops nats-config --tenant acme --route pager.turn --generate secrets.env --out nats-server.conf
"""


def _has_option(parents: Sequence[argparse.ArgumentParser], option: str) -> bool:
    return any(option in p._option_string_actions for p in parents)


def add_ops_commands(
    subparsers: Any,
    parents: Sequence[argparse.ArgumentParser] = (),
    *,
    routes: Sequence[str] | None = None,
) -> None:
    """Add ``ops nats-config`` to the ``vmem`` sub-command parser.

    `parents` are shared option parsers (their ``--json`` is used if they have
    one); `routes` is the default of ``--route``: the service's client-facing
    ``ACTOR.VERB`` list, so that ``vmem ops nats-config --tenant acme`` needs
    no ``--route``.
    """
    ops = subparsers.add_parser("ops", help="operate a distributed deployment",
                                description="Tools for running vmem on NATS (see ops/README.md).")
    osub = ops.add_subparsers(dest="ops_command", required=True, metavar="SUBCOMMAND")
    s = osub.add_parser(
        "nats-config", parents=list(parents), help="write the nats-server configuration (one account per tenant)",
        description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--tenant", action="append", default=[], metavar="NAME",
                   help="a tenant (repeatable): its account, user and password variable")
    default_routes = list(routes) if routes is not None else None
    s.add_argument("--route", action="append", default=None, metavar="ACTOR.VERB",
                   help="a client-facing request route tenants may call (repeatable)"
                        + (f"; default: the service's {len(default_routes)} routes" if default_routes else "; required"))
    s.add_argument("--env-passwords", action="store_true",
                   help="write $VMEM_..._PASSWORD references instead of bcrypt hashes")
    s.add_argument("--generate", metavar="FILE",
                   help="make a random password for every password variable that is not set, and write them "
                        "to FILE as VAR=value lines (mode 0600; the only copy of them)")
    s.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"subject prefix of the deployment (default {DEFAULT_PREFIX})")
    s.add_argument("--server-name", default=DEFAULT_SERVER_NAME, metavar="NAME",
                   help=f"the server's server_name (default {DEFAULT_SERVER_NAME})")
    s.add_argument("--out", metavar="FILE", help="write the configuration to FILE (default: standard output)")
    s.add_argument("--force", action="store_true", help="overwrite --out and --generate files that exist")
    if not _has_option(parents, "--json"):
        s.add_argument("--json", action="store_true",
                       help="print a JSON summary of the layout (with the configuration if there is no --out)")
    s.set_defaults(run=cmd_nats_config, sync=True, default_routes=default_routes)


def _check_writable(path: str, force: bool, what: str) -> Path:
    target = Path(path)
    if target.is_dir():
        raise NatsConfigError(f"{what} {path} is a directory: give a file name")
    if target.exists() and not force:
        raise NatsConfigError(f"{what} {path} exists: choose another file, or pass --force to overwrite it")
    if not target.parent.is_dir():
        raise NatsConfigError(f"{what} {path}: the directory {target.parent} does not exist")
    return target


def _write(target: Path, text: str, mode: int) -> None:
    """Write `text` to `target` through a temporary file in the same directory, with permissions `mode`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cmd_nats_config(args: argparse.Namespace) -> int:
    tenants: list[str] = list(args.tenant or [])
    if not tenants:
        raise NatsConfigError("no tenant given: name each tenant with --tenant NAME (repeatable), e.g. --tenant acme")
    routes = args.route if args.route is not None else getattr(args, "default_routes", None)
    if not routes:
        raise NatsConfigError(
            "no route given: name each client-facing request ACTOR.VERB tenants may call with --route "
            "(repeatable), e.g. --route pager.turn"
        )
    out = _check_writable(args.out, args.force, "--out") if args.out else None
    secrets_file = _check_writable(args.generate, args.force, "--generate") if args.generate else None
    if out is not None and secrets_file is not None and out.resolve() == secrets_file.resolve():
        raise NatsConfigError("--out and --generate name the same file: give two files")

    kwargs: dict[str, Any] = {"prefix": args.prefix, "server_name": args.server_name}
    summary = config_summary(tenants, routes, env_passwords=args.env_passwords, **kwargs)  # validates first
    generated: dict[str, str] = {}
    if args.env_passwords:
        text = nats_server_config(tenants, routes, **kwargs)
        if secrets_file is not None:
            variables = [password_env(None)] + [password_env(t) for t in tenants]
            generated = {v: generate_password() for v in variables if not os.environ.get(v)}
    else:
        hashes, generated = password_hashes(tenants, generate=secrets_file is not None)
        text = nats_server_config(tenants, routes, password_hashes=hashes, **kwargs)

    if secrets_file is not None:
        _write(secrets_file, "".join(f"{v}={p}\n" for v, p in generated.items()), 0o600)
        names = ", ".join(generated) or "none (every variable is set)"
        print(f"vmem: generated passwords for {names} in {secrets_file} (mode 0600); keep that file, it is the only copy",
              file=sys.stderr)
    if out is not None:
        _write(out, text, 0o644 if args.env_passwords else 0o600)
    if getattr(args, "json", False):
        summary["out"] = str(out) if out is not None else None
        summary["generated"] = {"file": str(secrets_file), "variables": list(generated)} if secrets_file else None
        if out is None:
            summary["config"] = text
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    elif out is None:
        sys.stdout.write(text)
    return 0
