"""The loader's saved state: its envelope (version, fingerprint, counters), its checks, and the
conversion of a state saved on another number of hosts, following the plan's resume rule.

A state is a small JSON dict::

    {"version": 3, "fingerprint": {...}, "iterator": <Grain iterator state>, "hosts": H,
     "global_position": P, "batches": n, "pass": p, "pass_done": bool}

``global_position`` counts the positions of the global order consumed (None where the state
is not elastic); a state saved on ``H`` hosts restores on ``H'`` hosts from it alone.
"""

from __future__ import annotations

import json
import re
from typing import Any

from easydata_grain.fingerprint import describe, differences, digest
from easydata_grain.graph.host_split import SERVED, START
from easydata_grain.graph.plan import Mode, Plan, Resume
from easydata_grain.graph.row_address import NEXT_INDEX
from easydata_grain.io.errors import LoaderStateError
from easydata_grain.sources.protocol import IdentifiedSource, ShardedSource

STATE_VERSION = 5
"""The state's format. 5: plain functions are fingerprinted by their code and the values they
capture (4: by name alone), a ``restart`` mixture's pass ends exactly (the block at its end is
split), and packing on several hosts shares the last partial global batch of documents.
4: transforms and tokenizers are fingerprinted by content (3: by name). A state of an older
version could not be matched to its pipeline: it is refused."""
_FIELDS = frozenset(
    {
        "version",
        "fingerprint",
        "iterator",
        "hosts",
        "host",
        "global_position",
        "batches",
        "pass",
        "pass_done",
    }
)


def fingerprint(plan: Plan) -> dict[str, Any]:
    """What a saved state is valid for: the data, the row ops, the order and the batching.

    It may read every shard's metadata (a collective on several hosts): compute it once, on
    every host, not at save time on host 0 alone.
    """
    identities = _identities(plan.source)
    s = plan.settings
    return {
        "mode": plan.mode.value,
        "sources": digest(identities),
        "shards": len(identities),
        "rows_per_epoch": plan.rows_per_epoch,
        "transforms": [describe(op) for op in plan.row_ops],
        "seed": s.seed,
        "shuffle_buffer_size": s.shuffle_buffer_size,
        "global_batch_size": s.global_batch_size,
        "drop_remainder": s.drop_remainder,
        "num_epochs": s.num_epochs,
        "pad": describe(s.collate),
        "worker_processes": s.worker_processes,
        **({"pack": describe(s.pack)} if s.pack is not None else {}),
    }


def _identities(source: Any) -> list[str]:
    """What identifies the data: each shard's name, rows and version where the source knows
    them (a stream through transforms: with their fingerprint); the shard names of a stream;
    else its description (without memory addresses)."""
    if isinstance(source, IdentifiedSource):
        return source.identities()
    if isinstance(source, ShardedSource):
        return [str(name) for name in source.shard_names]
    return [re.sub(r" at 0x[0-9a-f]+", "", repr(source))]


def global_position(plan: Plan, iterator_state: Any) -> int | None:
    """Positions of the global order consumed, where the plan restores elastically; else None."""
    if plan.resume is not Resume.ELASTIC or not isinstance(iterator_state, dict):
        return None
    if plan.batches_random_access:
        return iterator_state[NEXT_INDEX] * plan.settings.global_batch_size
    if iterator_state.get(SERVED) == 0:  # between global batches: the parent's position is global
        return iterator_state[START][NEXT_INDEX]
    return None


def envelope(
    plan: Plan,
    fingerprint_: dict[str, Any],
    iterator_state: Any,
    *,
    batches: int,
    pass_number: int,
    pass_done: bool,
) -> dict[str, Any]:
    """The state to save."""
    return {
        "version": STATE_VERSION,
        "fingerprint": fingerprint_,
        "iterator": iterator_state,
        "hosts": plan.hosts.count,
        **({"host": plan.hosts.index} if per_host(plan) else {}),
        "global_position": global_position(plan, iterator_state),
        "batches": batches,
        "pass": pass_number,
        "pass_done": pass_done,
    }


def parse(state: Any, current_fingerprint: dict[str, Any]) -> dict[str, Any]:
    """``state`` (a dict, or its JSON text) checked field by field and against this pipeline's
    fingerprint; ``LoaderStateError`` names what is wrong."""
    if isinstance(state, str | bytes):
        try:
            state = json.loads(state)
        except ValueError as exc:
            raise LoaderStateError(f"The loader state is not valid JSON: {exc}.") from exc
    _check_fields(state)
    changed = differences(state["fingerprint"], current_fingerprint)
    if changed:
        raise LoaderStateError(
            "The saved loader state belongs to a different pipeline, so resuming would "
            "silently train on other data: " + "; ".join(changed) + ". Restore with the "
            "pipeline that saved it (same data, transforms, seed, batch size and workers)."
        )
    return state


def per_host(plan: Plan) -> bool:
    """Whether each host saves its own state (its iterator differs from the other hosts')."""
    s = plan.settings
    indexed_workers = plan.mode is Mode.INDEXED and s.worker_processes > 0
    return plan.hosts.count > 1 and (s.pack is not None or indexed_workers)


def iterator_state_for(plan: Plan, state: dict[str, Any]) -> Any:
    """The saved iterator state, converted to this host count if it was saved on another."""
    saved_hosts = state.get("hosts", plan.hosts.count)
    if saved_hosts == plan.hosts.count:
        host = state.get("host", plan.hosts.index)
        if host != plan.hosts.index:
            raise LoaderStateError(
                f"This state was saved by host {host} and cannot be restored on host "
                f"{plan.hosts.index}: each host saves its own state in this pipeline "
                f"({plan.resume_reason}). Restore each host's own state (LoaderRestore does)."
            )
        return state["iterator"]
    position = state.get("global_position")
    if plan.resume is not Resume.ELASTIC or position is None:
        raise LoaderStateError(
            f"This state was saved on {saved_hosts} hosts and cannot be restored on "
            f"{plan.hosts.count}: this pipeline resumes {plan.resume.value} "
            f"({plan.resume_reason}). Restart with the original host count, or use an indexed "
            "source (Parquet/JSON, in memory) without worker_processes for elastic restore."
        )
    if plan.batches_random_access:
        size = plan.settings.global_batch_size
        if position % size:
            raise LoaderStateError(
                f"The loader state is corrupted: global_position {position} is not a multiple "
                f"of the global batch size {size}."
            )
        return {NEXT_INDEX: position // size}
    return {START: {NEXT_INDEX: position}, SERVED: 0}


def _check_fields(state: Any) -> None:
    """Raise ``LoaderStateError`` unless every field of ``state`` holds what it should."""
    if not isinstance(state, dict) or not {"version", "fingerprint", "iterator"} <= set(state):
        raise LoaderStateError(
            "This is not an easydata-grain loader state (expected keys version, fingerprint, "
            f"iterator; got {sorted(state) if isinstance(state, dict) else type(state).__name__})."
        )
    if unknown := sorted(set(state) - _FIELDS):
        raise LoaderStateError(f"The loader state has unknown fields {unknown}.")
    if state["version"] != STATE_VERSION or isinstance(state["version"], bool):
        raise LoaderStateError(
            f"Loader state version {state['version']!r} is not {STATE_VERSION}: it was saved by "
            "another version of easydata-grain, whose states this one cannot match to a "
            "pipeline. Resume with the version that saved it, or start the loader afresh (or "
            "at a step with set_state from a state this version saved)."
        )
    if not isinstance(state["fingerprint"], dict):
        raise LoaderStateError(
            f"The loader state is corrupted: its fingerprint is a "
            f"{type(state['fingerprint']).__name__}, not a dict."
        )
    for name, minimum in (
        ("hosts", 1),
        ("host", 0),
        ("batches", 0),
        ("pass", 0),
        ("global_position", 0),
    ):
        if state.get(name) is not None and not _is_int(state[name], minimum):
            raise LoaderStateError(
                f"The loader state is corrupted: {name} is {state[name]!r}, not an int >= {minimum}."
            )
    if not isinstance(state.get("pass_done", False), bool):
        raise LoaderStateError(
            f"The loader state is corrupted: pass_done is {state['pass_done']!r}, not a bool."
        )
    bad = _non_integer_number(state["iterator"])
    iterator = state["iterator"]
    next_index = iterator.get(NEXT_INDEX) if isinstance(iterator, dict) else 0
    if bad is None and isinstance(next_index, bool):
        bad = next_index
    if bad is not None:
        raise LoaderStateError(
            f"The loader state is corrupted: the iterator position holds {bad!r}, not an int."
        )


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _non_integer_number(value: Any) -> Any:
    """The first float inside a nested state, where positions are ints; else None."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _non_integer_number(item)
            if found is not None:
                return found
        return None
    return value if isinstance(value, float) else None
