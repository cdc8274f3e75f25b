"""What the CLI's command modules share: JSON output, the parent parsers, namespace defaults, model and embedder choice."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from vmem.bus.subjects import DEFAULT_PREFIX
from vmem.errors import UsageError
from vmem.models.config import model_from_env
from vmem.models.model import Model
from vmem.models.offline import OfflineModel
from vmem.retrieval.choice import EMBEDDER_CHOICES, EMBEDDER_ENV
from vmem.retrieval.choice import make_embedder as choose_embedder
from vmem.retrieval.embed import Embedder, HashingEmbedder
from vmem.retrieval.minilm import MiniLMEmbedder
from vmem.service.vmem import Vmem
from vmem.storage.home import DEFAULT_HOME

PASSWORD_ENV = "VMEM_NATS_PASSWORD"
HOME_HELP = f"vmem home directory (default: $VMEM_HOME, else ./{DEFAULT_HOME})"
EMBEDDER_HELP = (
    f"embedder for vector retrieval: auto (all-MiniLM-L6-v2 when its model files are installed, else feature "
    f"hashing), hashing, or minilm (default: ${EMBEDDER_ENV}, else auto). A namespace keeps the embedder it was "
    f"first indexed with; change it with `vmem reindex`"
)


def out(obj: Any) -> None:
    """Print `obj` as one line of JSON (the stable ``--json`` output)."""
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")
    sys.stdout.flush()


class Parents(NamedTuple):
    """Parent parsers: options every command takes, and the optional or required ``--ns``."""

    base: argparse.ArgumentParser
    common: argparse.ArgumentParser
    ns_opt: argparse.ArgumentParser
    ns_req: argparse.ArgumentParser


def parents() -> Parents:
    base = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a --home given before the command is not reset by the subparser.
    base.add_argument("--home", default=argparse.SUPPRESS, help=HOME_HELP)
    base.add_argument("--json", action="store_true", help="print machine-readable JSON")
    base.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="async backend")
    common = argparse.ArgumentParser(add_help=False, parents=[base])
    common.add_argument("--embedder", choices=EMBEDDER_CHOICES, default=None, help=EMBEDDER_HELP)
    common.add_argument("--nats", metavar="URL",
                        help="talk to a deployment's `vmem serve` over NATS instead of a local home (nats://host:4222)")
    common.add_argument("--user", help=f"with --nats: the tenant's NATS user (its password in ${PASSWORD_ENV})")
    common.add_argument("--creds", metavar="FILE", help="with --nats: a NATS credentials file instead of user and password")
    common.add_argument("--prefix", default=DEFAULT_PREFIX,
                        help=f"with --nats: the deployment's subject prefix (default {DEFAULT_PREFIX})")
    ns_opt = argparse.ArgumentParser(add_help=False)
    ns_opt.add_argument("--ns", help="namespace TENANT/AGENT (optional when the home has only one)")
    ns_req = argparse.ArgumentParser(add_help=False)
    ns_req.add_argument("--ns", required=True, help="namespace TENANT/AGENT, e.g. acme/agent7")
    return Parents(base, common, ns_opt, ns_req)


async def default_ns(vm: Vmem, ns: str | None) -> str:
    if ns:
        return ns
    known = [n for n in await namespaces(vm) if not n.split("/")[1].startswith("_")]
    if len(known) == 1:
        return known[0]
    raise UsageError(
        "--ns is required: " + (f"this home has {len(known)} namespaces ({', '.join(known)})" if known else "this home is empty")
    )


async def namespaces(vm: Vmem) -> list[str]:
    if vm._home is None:
        raise UsageError("--ns is required with --nats")
    return await vm._home.log.namespaces()


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def make_embedder(name: str | None) -> Embedder:
    """The embedder of ``--embedder`` (None: ``$VMEM_EMBEDDER``, else auto); ModelFilesError for minilm without its files."""
    return choose_embedder(name)


def pinned_embedder_id(name: str | None) -> str:
    """The embedder id an explicit ``--embedder hashing|minilm`` names ("" for auto or none): what a service must use."""
    if name == "hashing":
        return HashingEmbedder().id
    if name == "minilm":
        return MiniLMEmbedder().id
    return ""


async def embedder_of(vm: Vmem, ns: str) -> str:
    """The id of the embedder `ns` is indexed and searched with (the service's, with ``--nats``).

    Commands ask before any work, so a namespace indexed with another
    embedder is refused (EmbedderMismatch) before anything is written.
    """
    return await vm.embedder(ns)


def say_embedder(args: argparse.Namespace, embedder: str) -> None:
    """Say on stderr which embedder a command used, unless ``--json`` (where it is the ``embedder`` field).

    Said once the command has succeeded, so an error is still the one line it prints.
    """
    if not getattr(args, "json", False):
        print(f"vmem: embedder {embedder}", file=sys.stderr, flush=True)


def with_embedder(result: Any, embedder: str) -> dict[str, Any]:
    """A command's JSON output with the ``embedder`` field added."""
    return {**msgspec.to_builtins(result), "embedder": embedder}


def make_model(name: str) -> Model:
    if name == "offline":
        return OfflineModel()
    return model_from_env(name)

