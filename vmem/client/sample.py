"""A sample document for the demo, the examples and the tests: a generated handbook of invented facts."""

from __future__ import annotations

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
