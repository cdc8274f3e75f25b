"""The section budget table and the one routine that shares a budget out.

The table is data: each canonical section has a priority, a maximum share of
the budget, an optional minimum, and whether it is mandatory.  `fill` walks
the sections in priority order; a section takes whole items (or whole
integrity groups, such as a tool call with its result) while they fit in its
share, and what it leaves unused flows on to the next section.  Mandatory
sections take all they need; if they cannot, the budget is too small
(BudgetError).  The pager and the packer both call `fill`, so what the pager
plans to keep resident is exactly what the packer will find room for.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import msgspec

from vmem.errors import BudgetError, UsageError
from vmem.schemas.events import LeftOut


class SectionSpec(msgspec.Struct, frozen=True):
    name: str
    priority: int  # lower fills first
    max_share: float  # of the budget, before what earlier sections left flows in
    min_tokens: int = 0  # reserved for the section even when earlier ones want more
    mandatory: bool = False
    contiguous: bool = False  # take items in order and stop at the first that does not fit


DEFAULT_TABLE: tuple[SectionSpec, ...] = (
    SectionSpec("System", 0, 1.0, mandatory=True),
    SectionSpec("Task", 1, 1.0, mandatory=True),
    SectionSpec("Tools", 2, 1.0, mandatory=True),
    # The working context (slots): small, edited rarely, always shown.
    SectionSpec("State", 3, 0.15),
    # The message queue; its newest message is never cut.
    SectionSpec("Recent", 4, 0.25, min_tokens=32, contiguous=True),
    # Retrieved fills before Plan and Background, whose size depends on what
    # is resident: so the pager can plan residency from what comes first.
    SectionSpec("Retrieved", 5, 0.55),
    # Small, but one item (this step's plan, warnings and the last error):
    # reserve room for it so Retrieved cannot crowd it out.
    SectionSpec("Plan", 6, 0.05, min_tokens=96),
    SectionSpec("Background", 7, 0.15),
)


# What these sections hold depends on which blocks are resident, so they must
# fill after Retrieved: the pager sizes Retrieved from the sections before it.
RESIDENCY_DEPENDENT = ("Background", "Plan")


def validate_table(table: Sequence[SectionSpec]) -> None:
    """A section table must have unique names and fill Retrieved before what depends on it."""
    names = [s.name for s in table]
    if len(set(names)) != len(names):
        raise UsageError(f"section table names a section twice: {names}")
    prio = {s.name: s.priority for s in table}
    for name in RESIDENCY_DEPENDENT:
        if "Retrieved" in prio and name in prio and prio[name] < prio["Retrieved"]:
            raise UsageError(
                f"section table fills {name} (priority {prio[name]}) before Retrieved ({prio['Retrieved']}); "
                f"{name} depends on what is resident, so give it a larger priority number"
            )


class Item(msgspec.Struct, frozen=True):
    """A unit a section can hold: a block, or generated text (id starts with '~').

    Items sharing a non-empty `group` are taken or dropped together; `order`
    is where the item is rendered within its section (log order).
    """

    id: str
    text: str
    tokens: int
    order: int = 0
    group: str = ""


class Fill(msgspec.Struct):
    chosen: dict[str, list[Item]]
    allotted: dict[str, int]
    left_out: list[LeftOut]
    unused: int = 0  # of the budget, after both passes: what no waiting unit fitted


def item_units(items: Sequence[Item]) -> list[list[Item]]:
    """Items as take-or-leave units: an integrity group becomes one unit, at its first member."""
    units: list[list[Item]] = []
    by_group: dict[str, list[Item]] = {}
    for it in items:
        if it.group:
            unit = by_group.get(it.group)
            if unit is not None:
                unit.append(it)
                continue
            unit = by_group[it.group] = [it]
        else:
            unit = [it]
        units.append(unit)
    return units


def section_overhead(name: str, count: Callable[[str], int]) -> int:
    return count(section_header(name) + section_footer(name))


def section_header(name: str) -> str:
    return f"<{name}>\n"


def section_footer(name: str) -> str:
    # Tags, not markdown headings: pages are often markdown themselves, and a
    # page's "## Heading" must not read as the start of a section.
    return f"\n</{name}>"


def fill(
    by_section: Mapping[str, Sequence[Item]],
    budget: int,
    count: Callable[[str], int],
    table: Sequence[SectionSpec] = DEFAULT_TABLE,
    *,
    decided: frozenset[str] = frozenset(),
) -> Fill:
    """Share `budget` out among the sections' items (offered in preference order).

    Two passes.  First, in priority order, each section takes units while they
    fit its share plus what earlier sections left unused.  Then whatever the
    whole table left unused is offered again, in priority order, to the units
    that did not fit, so the budget is used when there is enough to fill it.
    Sections in `decided` (the pager already sized them) take all their items
    that fit the remaining budget, ahead of lower-priority sections.
    """
    if table is not DEFAULT_TABLE:
        validate_table(table)
    specs = sorted(table, key=lambda t: t.priority)
    joins = count("\n\n") * len(specs) + 2
    # A minimum reserves room only for what the section actually holds.
    reserved = {
        s.name: min(s.min_tokens, sum(i.tokens for i in items) + section_overhead(s.name, count))
        for s in specs
        if s.min_tokens and (items := by_section.get(s.name))
    }
    remaining = budget - joins
    carry = 0
    chosen: dict[str, list[Item]] = {}
    allotted: dict[str, int] = {}
    used: dict[str, int] = {}
    waiting: dict[str, list[list[Item]]] = {}
    for spec in specs:
        reserved_here = reserved.pop(spec.name, 0)
        later_minimums = sum(reserved.values())
        items = by_section.get(spec.name) or []
        if spec.mandatory:
            cap = remaining
        elif spec.name in decided:
            # Sized by the pager, with the room it found; a later section's
            # minimum may not take that back (what it would hold, for example
            # a summary of what the pager just evicted, did not exist then).
            cap = remaining
        else:
            share = int(budget * spec.max_share) + carry
            cap = max(0, min(remaining - later_minimums, max(share, reserved_here)))
        allotted[spec.name] = cap
        header = section_overhead(spec.name, count) if items else 0
        spent = header
        taken: list[Item] = []
        left_units: list[list[Item]] = []
        for i, unit in enumerate(item_units(items)):
            cost = sum(it.tokens for it in unit)
            must = spec.mandatory or (spec.name == "Recent" and i == 0)
            if left_units and spec.contiguous:
                left_units.append(unit)
            elif spent + cost <= (remaining if must else cap):
                taken += unit
                spent += cost
            elif must:
                raise BudgetError(
                    f"budget {budget} tokens cannot hold the mandatory {spec.name} section "
                    f"({spent + cost} tokens needed so far); raise --budget"
                )
            else:
                left_units.append(unit)
        if not taken:
            spent = 0
        chosen[spec.name] = taken
        used[spec.name] = spent
        waiting[spec.name] = left_units
        remaining -= spent
        if not spec.mandatory:
            carry = max(0, cap - spent)
    # Second pass: what is still unused flows to the highest-priority section
    # that can use it.
    for spec in specs:
        units = waiting.get(spec.name) or []
        still: list[list[Item]] = []
        for unit in units:
            cost = sum(it.tokens for it in unit)
            header = 0 if chosen[spec.name] else section_overhead(spec.name, count)
            if cost + header <= remaining and not (still and spec.contiguous):
                chosen[spec.name] += unit
                used[spec.name] += cost + header
                allotted[spec.name] += cost + header
                remaining -= cost + header
            else:
                still.append(unit)
        waiting[spec.name] = still
    left = [
        LeftOut(block_id=it.id, section=name, reason="budget")
        for name in (s.name for s in specs)
        for unit in waiting.get(name, [])
        for it in unit
    ]
    return Fill(chosen, allotted, left, remaining)
