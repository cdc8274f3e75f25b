"""An agent of tenant acme on a vmem deployment: nothing but a NATS URL and its credentials.

No JetStream rights, no local store: every state change is a request to the
actors of `vmem serve`, every read too.  Run `vmem serve` and a compressor
worker first (README, "Distributed mode"), then:

    VMEM_NATS_URL=nats://127.0.0.1:4222 VMEM_NATS_USER=acme VMEM_NATS_PASSWORD=... \\
        python examples/distributed-agent/agent.py [--ns acme/agent7]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import anyio

from vmem import Vmem, sample_handbook

QUESTIONS = (
    "What is the radio callsign of Gannet Point station?",
    "Who is the principal keeper of Cape Wrath?",
    "When was Ailsa Craig lighthouse first lit?",
)


async def main(ns: str) -> None:
    url = os.environ["VMEM_NATS_URL"]
    async with Vmem.connect(url, user=os.environ.get("VMEM_NATS_USER"), password=os.environ.get("VMEM_NATS_PASSWORD")) as vm:
        with tempfile.TemporaryDirectory() as tmp:
            doc = Path(tmp) / "handbook.md"
            doc.write_text(sample_handbook(), encoding="utf-8")
            ingested = await vm.ingest(ns, doc)
        print(f"ingested {ingested.pages} pages into {ns}")
        for q in QUESTIONS:
            r = await vm.ask(ns, q, budget=800)
            print(f"{q} -> {r.answer} (faults {r.faults}, evicted {r.evictions}, summaries {len(r.summaries)})")
        report = await vm.replay(ns)
        print(f"replay: {report.events} events, equal: {report.equal}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="acme/agent7", help="the namespace to work in (a tenant's own)")
    anyio.run(main, parser.parse_args().ns, backend="asyncio")
