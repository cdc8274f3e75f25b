"""Replay: re-fold a namespace's log and check it against the live state.

Three checks (ARCHITECTURE, invariant 3): the state hash of a fold from zero
must equal the live state's (snapshot plus tail); every recorded prompt trace
must re-pack, from the state just before it, to the same SHA-256
(re-render); and every pager decision must come out the same when the pager's
selection is run again on the state before it (re-decide).  Re-rendering and
re-deciding are the packer's and the pager's own functions, passed in as
:class:`Checks` (:class:`vmem.paging.redo.PagerChecks`), so storage knows
nothing of them.

Re-decide re-runs selection from the candidates and scores the decision
recorded: retrieval itself reads indexes that have grown since, so its raw
results are recorded, not recomputed.  Records the stored-event checks skip
are skipped here too (and counted), so replay and the live view agree.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from vmem.schemas.events import (
    PageEvicted,
    PageFaultRaised,
    PageFaultResolved,
    PageLoaded,
    PromptPacked,
)
from vmem.schemas.messages import ReplayReport
from vmem.state.fold import State, decode_snapshot, encode_snapshot, fold, state_hash
from vmem.state.validate import Rejected
from vmem.storage.home import Home
from vmem.storage.log import Log
from vmem.storage.view import checked_batches

_PAGE_EVENTS = (PageFaultRaised, PageEvicted, PageLoaded)


class Decided(NamedTuple):
    """A page fault's outcome: loaded, evicted, and which loaded blocks are shown as a passage (offsets)."""

    loaded: tuple[str, ...]
    evicted: tuple[str, ...]
    passages: dict[str, tuple[int, int]]  # of the loaded blocks shown as a passage


class Checks(Protocol):
    """The decisions replay runs again: the packer's rendering and the pager's selection."""

    def render(self, ns: str, state: State, trace: PromptPacked) -> str:
        """The SHA-256 of the prompt `state` packs to, with the trace's turn, attempt, budget and tokenizer."""
        ...

    def decide(self, ns: str, state: State, resolved: PageFaultResolved) -> Decided:
        """What the pager decides on `state` from the inputs `resolved` recorded."""
        ...


async def fold_log(log: Log, ns: str, state: State, *, after: int = 0, until: int | None = None,
                   rejected: list[Rejected] | None = None) -> tuple[int, int]:
    """Fold a namespace's checked events (after `after`, up to `until`) into `state`: (count, last seq).

    Each log folds its own fastest way (LMDB straight from its memory map).
    """
    return await log.fold_into(ns, state, after=after, until=until, on_reject=rejected.append if rejected is not None else None)


async def replay(home: Home, ns: str, *, until: int | None = None, checks: Checks | None = None) -> ReplayReport:
    """Re-fold `ns` from zero (through `until`); with `checks`, re-render and re-decide as well."""
    verify = checks is not None
    state = State(ns=ns)
    rejected: list[Rejected] = []
    events = 0
    last = 0
    checked = equal = mismatch = 0
    decided = same = differ = 0
    if not verify:
        events, last = await fold_log(home.log, ns, state, until=until, rejected=rejected)
    else:
        before_run: State | None = None  # the state before the current run of page events
        passages: dict[str, tuple[int, int]] = {}  # the passages that run loaded
        async for batch, covered in checked_batches(home.log, ns, until=until, batch=8192, on_reject=rejected.append):
            for stored in batch:
                ev = stored.event
                if type(ev) in _PAGE_EVENTS:
                    if before_run is None:
                        before_run = decode_snapshot(encode_snapshot(state))
                        passages = {}
                    if type(ev) is PageLoaded and ev.passage != (0, 0):
                        passages[ev.block_id] = ev.passage
                elif type(ev) is not PageFaultResolved:
                    before_run = None
                if type(ev) is PageFaultResolved and ev.policy:
                    # No page events before it: the decision changed nothing.
                    base = before_run if before_run is not None else state
                    decided += 1
                    assert checks is not None
                    if checks.decide(ns, base, ev) == (ev.loaded, ev.evicted, passages if before_run is not None else {}):
                        same += 1
                    elif not differ:
                        differ = stored.seq
                    before_run = None
                if type(ev) is PromptPacked:
                    assert checks is not None
                    checked += 1
                    if checks.render(ns, state, ev) == ev.prompt_sha256:
                        equal += 1
                    elif not mismatch:
                        mismatch = stored.seq
                fold((ev,), state)
            events += len(batch)
            last = covered
    replayed = state_hash(state)
    live = await _live_hash(home, ns, last if until is not None else None)
    return ReplayReport(
        ns=ns,
        events=events,
        until=last,
        state_hash=replayed,
        live_state_hash=live,
        equal=replayed == live and equal == checked and same == decided,
        prompts_checked=checked,
        prompts_equal=equal,
        first_prompt_mismatch=mismatch,
        decisions_checked=decided,
        decisions_equal=same,
        first_decision_mismatch=differ,
        rejected=len(rejected),
        first_rejected=rejected[0].seq if rejected else 0,
        rejected_reason=rejected[0].reason if rejected else "",
    )


async def _live_hash(home: Home, ns: str, until: int | None) -> str:
    if until is None:
        view = home.view(ns)
        await view.catch_up()
        async with view.lock:
            return state_hash(view.state)
    return state_hash(await state_at(home, ns, until))


async def state_at(home: Home, ns: str, seq: int) -> State:
    """The state of `ns` as the running system held it at `seq`: the newest snapshot at or before it, plus the events after."""
    snap = home.snapshots.load(ns, at_most=seq)
    after, state = snap if snap is not None else (0, State(ns=ns))
    await fold_log(home.log, ns, state, after=after, until=seq)
    return state
