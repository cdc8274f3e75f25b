"""Quickstart: ingest a document far larger than the budget, ask, replay.

Run: .venv/bin/python examples/quickstart.py [HOME]   (asyncio; pass --trio for trio)
"""

import sys
import tempfile
from pathlib import Path

import anyio

from vmem import Vmem, sample_handbook


async def main(home: Path) -> None:
    doc = home.parent / "handbook.md"
    doc.write_text(sample_handbook(), encoding="utf-8")
    async with Vmem.open(home, create=True) as vm:
        await vm.ingest("acme/agent7", doc)
        result = await vm.ask("acme/agent7", "Who is the principal keeper of Cape Wrath?", budget=1024)
        print(result.answer)
        print(f"faults={result.faults} cited={result.cited} prompt_tokens={result.prompt_tokens}")
        report = await vm.replay("acme/agent7")
        print(f"replay equal: {report.equal}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    home = Path(args[0]) if args else Path(tempfile.mkdtemp()) / "home"
    anyio.run(main, home, backend="trio" if "--trio" in sys.argv else "asyncio")
