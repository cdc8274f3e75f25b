"""`vmem demo`: the main job, offline, in one process, with nothing to start.

It writes a generated handbook (a sample document, at least 20 times the
prompt budget), ingests it, asks questions whose answers sit on pages that are
not resident, so the offline model faults them in, the pager evicts older
pages and the compressor summarises them, and finally replays the log.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from pathlib import Path

from vmem._client import Client
from vmem._tokens import get_tokenizer

NS = "demo/handbook"

_NAMES = (
    "Gannet Point", "Skerry Head", "Corran Ness", "Hound Rock", "Maiden Isle", "Black Craig", "Sule Stack",
    "Fladda Sound", "Rubh Re", "Noss Head", "Tod Head", "Girdle Ness", "Holborn Ness", "Start Point",
    "Cantick Head", "Hoy Sound", "Dunnet Head", "Strathy Point", "Cape Wrath", "Stoer Head", "Eilean Glas",
    "Ushenish", "Barra Head", "Hynish", "Scurdie Ness", "Fidra", "Barns Ness", "St Abbs", "Covesea",
    "Chanonry", "Cromarty", "Tarbat Ness", "Clyth Ness", "Sumburgh", "Eshaness", "Bressay", "Muckle Flugga",
    "Out Skerries", "Auskerry", "Copinsay", "Noup Head", "Sanda", "Pladda", "Turnberry", "Corsewall",
    "Mull of Galloway", "Killantringan", "Little Ross", "Southerness", "Ailsa Craig",
)
_KEEPERS = (
    "Agnes Rennie", "Tomas Learmonth", "Isla Macrae", "Duncan Sinclair", "Morag Fraser", "Ewan Gillies",
    "Catriona Bain", "Angus Munro", "Elspeth Ross", "Hamish Reid", "Fiona Dunbar", "Callum Ogilvie",
)
_LAMPS = ("a first-order Fresnel lens", "a rotating catadioptric optic", "a sealed-beam LED array",
          "a paraffin vapour burner", "an acetylene flasher", "a hyperradiant lens")
_HAZARDS = ("a tidal race on the ebb", "sunken reefs to the north", "sudden sea fog", "drifting pack ice",
            "a sandbar that moves every winter", "cliff falls after heavy rain")


def handbook(stations: int = 50) -> str:
    """The sample document: one section per station, each with distinct facts."""
    out = ["# Northern Lights Station Handbook\n",
           "This handbook is a generated sample document for the vmem demo. Every fact in it is invented.\n"]
    for i in range(stations):
        name = _NAMES[i % len(_NAMES)]
        keeper = _KEEPERS[(i * 5) % len(_KEEPERS)]
        lamp = _LAMPS[(i * 7) % len(_LAMPS)]
        hazard = _HAZARDS[(i * 11) % len(_HAZARDS)]
        year = 1790 + (i * 37) % 180
        height = 18 + (i * 13) % 60
        callsign = f"{name.split()[0][:3].upper()}{(i * 97) % 900 + 100}"
        out.append(f"## {name}\n")
        out.append(
            f"{name} lighthouse was first lit in {year}. The tower stands {height} metres above the high-water "
            f"mark and is painted white with a buff band. The light is produced by {lamp}, serviced at the "
            f"spring and autumn inspections.\n"
        )
        out.append(
            f"The principal keeper of {name} is {keeper}, who keeps the station logbook and the weather returns. "
            f"The radio callsign of {name} station is {callsign}. Relief crews land at the east jetty when "
            f"the swell allows, and otherwise wait at the mainland pier.\n"
        )
        out.append(
            f"Mariners approaching {name} should beware of {hazard}. The fog signal sounds two blasts every "
            f"ninety seconds. Supplies for {name} arrive on the first Monday of each month, weather permitting, "
            f"and include paraffin, tinned food, fresh water and spare mantles for the lamp room.\n"
        )
        out.append(
            f"Station routine at {name}: the lamp is lit at sunset and extinguished at sunrise; the lens is "
            f"cleaned each morning; the log records visibility, wind and sea state every three hours; and the "
            f"engine room diesel is run for twenty minutes each week.\n"
        )
        out.append(
            f"History of {name}: the site was surveyed by the Commissioners a decade before the light was "
            f"built, after a winter in which several fishing boats were lost on the approaches. The first "
            f"keepers lived in cottages at the foot of the tower, and their children were taught by a "
            f"visiting schoolmaster who crossed from the mainland once a fortnight.\n"
        )
        out.append(
            f"Equipment held at {name}: two spare lamp burners, a hand-cranked fog horn for use if the "
            f"compressor fails, a barometer checked against the mainland each quarter, signal flags, a "
            f"medicine chest, a telescope, and a small boat kept in the boathouse above the slipway.\n"
        )
        out.append(
            f"Inspection notes for {name}: the last inspection found the lantern glazing sound, the "
            f"stairs in fair order and the rainwater cisterns clean. The inspector asked that the paint "
            f"store be moved away from the oil store and that the boathouse winch be greased more often.\n"
        )
    return "\n".join(out)


# (question, prefetch): the last turn pages on demand only, so the model
# itself raises the fault.
QUESTIONS = (
    ("What is the radio callsign of Gannet Point station?", True),
    ("Who is the principal keeper of Cape Wrath?", True),
    ("What hazard should mariners beware of near Sumburgh?", True),
    ("When was Ailsa Craig lighthouse first lit?", True),
    ("What is the radio callsign of Gannet Point station?", True),
    ("Which lamp produces the light at Hound Rock?", False),
)


async def run_demo(vm: Client, *, home: Path, budget: int, json_out: bool) -> int:
    """Ingest the handbook into `home`'s namespace demo/handbook, ask, replay; print what happens."""
    say = (lambda *a: None) if json_out else (lambda *a: print(*a, flush=True))
    report: dict[str, Any] = {"ns": NS, "budget": budget, "turns": []}
    doc = home / "demo-handbook.md"
    text = handbook()
    doc.write_text(text, encoding="utf-8")
    doc_tokens = get_tokenizer("cl100k_base").count(text)
    say("== vmem demo (embedded, offline model: a deterministic stand-in, not an LLM) ==")
    say(f"home {home}; namespace {NS}; prompt budget {budget} tokens")
    ing = await vm.ingest(NS, doc)
    say(f"ingested {doc.name}: {doc_tokens} tokens ({doc_tokens / budget:.1f}x the budget) -> {ing.pages} pages")
    report["document_tokens"] = doc_tokens
    report["ingest"] = msgspec.to_builtins(ing)
    evicted_before: set[str] = set()
    for q, prefetch in QUESTIONS:
        r = await vm.ask(NS, q, budget=budget, prefetch=prefetch)
        report["turns"].append(msgspec.to_builtins(r))
        mode = "" if prefetch else "   (demand paging: the pager does not prefetch; the model faults)"
        say(f"\n[turn {r.turn}] user: {q}{mode}")
        say(f"  answer: {r.answer}")
        say(
            f"  {r.attempts} attempt(s), {r.faults} page fault(s), loaded {len(r.loaded)}, evicted {r.evictions}, "
            f"summaries {len(r.summaries)}; prompt {r.prompt_tokens}/{budget} tokens, sha256 {r.prompt_sha256[:16]}"
        )
        reloaded = [b for b in r.loaded if b in evicted_before]
        if reloaded:
            say(f"  reloaded in full after an earlier eviction: {', '.join(b[:12] for b in reloaded)}")
        evicted_before.update(r.evicted)
        for sid in r.summaries:
            s = await vm.block(NS, sid)
            say(f"  summary {sid[:12]} of {len(s.text)} chars: {s.text[:110]}...")
    rep = await vm.replay(NS, verify=True)
    report["replay"] = msgspec.to_builtins(rep)
    say(f"\nreplay: {rep.events} events, state hash {rep.state_hash[:16]}, live {rep.live_state_hash[:16]}: "
        f"{'equal' if rep.equal else 'NOT EQUAL'}; {rep.prompts_equal}/{rep.prompts_checked} prompts re-packed byte-identical")
    totals = {k: sum(t[k] for t in report["turns"]) for k in ("faults", "evictions")}
    totals["summaries"] = sum(len(t["summaries"]) for t in report["turns"])
    report["totals"] = totals
    say(f"totals: {totals['faults']} faults, {totals['evictions']} evictions, {totals['summaries']} summaries")
    if json_out:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    ok = rep.equal and totals["faults"] > 0 and totals["evictions"] > 0 and totals["summaries"] > 0
    return 0 if ok else 1
