"""Packing on 1-3 hosts drops no token: every document reaches exactly one host's packer (a
last partial global batch of documents is shared among the hosts, unpadded), greedy keeps each
host's documents in order, ``drop_remainder`` fills the last batch with padding rows instead of
dropping it, and each host resumes exactly. Equal step counts across hosts need the hosts'
all-gather: ``test_packing.py::test_two_hosts_pack_their_rows_with_equal_steps_and_resume``
runs them as real ``jax.distributed`` processes; here each simulated host ends with its own
rows, and construction warns."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, FilterFunction, Hosts, InMemorySource, Pack

EOS, PAD = 1, 0
# The hosts here are simulated in one process: each ends with its own rows (see the last test).
pytestmark = pytest.mark.filterwarnings("ignore:pack= on host:UserWarning")


def keep(row: dict[str, Any]) -> bool:
    """The filter of the ``filtered`` sources."""
    return bool(row["keep"])


def documents(lengths: list[int], kept: list[bool]) -> list[dict[str, Any]]:
    """Documents with distinct token ids (never EOS or PAD)."""
    return [
        {"input_ids": list(range(2 + 100 * i, 2 + 100 * i + n)), "keep": k}
        for i, (n, k) in enumerate(zip(lengths, kept, strict=True))
    ]


def host_documents(docs: list[Any], hosts: Hosts, global_batch: int) -> list[Any]:
    """Host ``hosts.index``'s documents: its part of each full global batch, then its share
    ``[r*h//H, r*(h+1)//H)`` of the ``r`` documents of a last partial one."""
    local = global_batch // hosts.count
    full, rest = divmod(len(docs), global_batch)
    mine = [
        docs[g * global_batch + hosts.index * local + i] for g in range(full) for i in range(local)
    ]
    start = full * global_batch
    return (
        mine
        + docs[
            start + rest * hosts.index // hosts.count : start
            + rest * (hosts.index + 1) // hosts.count
        ]
    )


def loader(
    docs: list[dict[str, Any]], kind: str, hosts: Hosts, global_batch: int, pack: Pack, drop: bool
) -> AsyncDataLoader:
    if kind == "streaming":
        source: Any = iter([dict(d) for d in docs])
    else:
        source = InMemorySource.from_rows(docs)
        if kind == "filtered":
            source = source.filter(FilterFunction(keep))
    return AsyncDataLoader(
        source,
        global_batch_size=global_batch,
        hosts=hosts,
        shuffle_buffer_size=0,
        pack=pack,
        drop_remainder=drop,
    )


def real_tokens(batches: list[dict[str, np.ndarray]]) -> list[int]:
    """The tokens under ``attention_mask``, in row order."""
    return [
        int(t)
        for b in batches
        for row, mask in zip(b["input_ids"], b["attention_mask"], strict=True)
        for t, m in zip(row, mask, strict=True)
        if m
    ]


@settings(deadline=None, max_examples=60)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=30),
    seed=st.integers(0, 2**16),
    seq_length=st.integers(1, 16),
    count=st.integers(1, 3),
    local=st.integers(1, 3),
    strategy=st.sampled_from(["greedy", "first_fit"]),
    kind=st.sampled_from(["indexed", "filtered", "streaming"]),
    drop=st.booleans(),
)
def test_every_token_reaches_one_host(
    lengths: list[int],
    seed: int,
    seq_length: int,
    count: int,
    local: int,
    strategy: str,
    kind: str,
    drop: bool,
) -> None:
    kept = list(np.random.default_rng(seed).random(len(lengths)) < 0.7)
    docs = documents(lengths, kept)
    pack = Pack(seq_length, eos_token_id=EOS, pad_token_id=PAD, strategy=strategy)  # type: ignore[arg-type]
    global_batch = count * local
    everything: Counter[int] = Counter()
    for h in range(count):
        hosts = Hosts(h, count)
        batches = list(loader(docs, kind, hosts, global_batch, pack, drop))
        mine = [
            d["input_ids"] + [EOS]
            for d in host_documents(docs, hosts, global_batch)
            if d["keep"] or kind != "filtered"
        ]
        expected = [t for ids in mine for t in ids]
        got = real_tokens(batches)
        if strategy == "greedy":
            assert got == expected  # in order on each host
        else:
            assert Counter(got) == Counter(expected)
        everything.update(got)
        sizes = [len(b["input_ids"]) for b in batches]
        assert all(size == local for size in sizes[:-1])
        assert not sizes or sizes[-1] == local or (not drop and 0 < sizes[-1] < local)
        for b in batches:  # padding rows: pad ids, every mask and segment id 0
            off = b["attention_mask"] == 0
            assert (b["input_ids"][off] == PAD).all() and (b["segment_ids"][off] == 0).all()
            assert (b["loss_mask"][off] == 0).all()
    wanted = [d for d in docs if d["keep"] or kind != "filtered"]
    assert everything == Counter(t for d in wanted for t in [*d["input_ids"], EOS])


@settings(deadline=None, max_examples=25)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=30),
    seq_length=st.integers(2, 16),
    count=st.integers(1, 3),
    local=st.integers(1, 3),
    strategy=st.sampled_from(["greedy", "first_fit"]),
    kind=st.sampled_from(["indexed", "filtered"]),
    drop=st.booleans(),
    data=st.data(),
)
def test_each_host_resumes_exactly(
    lengths: list[int],
    seq_length: int,
    count: int,
    local: int,
    strategy: str,
    kind: str,
    drop: bool,
    data: st.DataObject,
) -> None:
    docs = documents(lengths, [i % 3 != 1 for i in range(len(lengths))])
    pack = Pack(seq_length, eos_token_id=EOS, pad_token_id=PAD, strategy=strategy)  # type: ignore[arg-type]
    global_batch = count * local
    for h in range(count):
        hosts = Hosts(h, count)
        expected = list(loader(docs, kind, hosts, global_batch, pack, drop))
        k = data.draw(st.integers(0, len(expected)))
        first = loader(docs, kind, hosts, global_batch, pack, drop)
        head = [next(first) for _ in range(k)]
        second = loader(docs, kind, hosts, global_batch, pack, drop)
        second.set_state(json.dumps(first.get_state()))
        got = head + list(second)
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert a.keys() == b.keys()
            assert all(np.array_equal(a[name], b[name]) for name in a)


def test_fewer_documents_than_the_global_batch_still_come_out() -> None:
    docs = documents([3, 3, 3], [True] * 3)
    pack = Pack(8, eos_token_id=EOS, pad_token_id=PAD)
    got = [real_tokens(list(loader(docs, "indexed", Hosts(h, 2), 8, pack, True))) for h in range(2)]
    assert got == [[2, 3, 4, EOS], [102, 103, 104, EOS, 202, 203, 204, EOS]]


@pytest.mark.filterwarnings("default:pack= on host:UserWarning")
def test_packing_on_hosts_without_jax_distributed_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts(i, n) (or EASYDATA_HOST_*) without jax.distributed: no channel to agree on the last
    step, so simulated hosts end with their own rows (steps differ): said at construction."""
    docs = documents([5] * 7, [True] * 7)
    pack = Pack(4, eos_token_id=EOS, pad_token_id=PAD)
    with pytest.warns(UserWarning, match=r"host 1 of 2 without jax.distributed"):
        hosts = [loader(docs, "indexed", Hosts(h, 2), 2, pack, False) for h in range(2)]
    assert len({len(list(h)) for h in hosts}) == 2  # what the warning is about
    monkeypatch.setenv("EASYDATA_HOST_INDEX", "0")
    monkeypatch.setenv("EASYDATA_HOST_COUNT", "2")
    with pytest.warns(UserWarning, match="without jax.distributed"):
        AsyncDataLoader(InMemorySource.from_rows(docs), global_batch_size=2, pack=pack)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "pack= on host")
        loader(docs, "indexed", Hosts(0, 1), 2, pack, False)  # one host: nothing to agree on
        AsyncDataLoader(InMemorySource.from_rows(docs), global_batch_size=2, pad=True)
