"""Worker processes (Grain's ``mp_prefetch``) that work in any program and exit quietly."""

from __future__ import annotations

import sys

import grain
from absl import flags
from grain.experimental import DatasetOptions, WithOptionsIterDataset

# Batches come back from the workers pickled, never in shared memory. Grain's shared-memory
# arrays reach the consumer and are freed by a daemon thread (frees still pending at exit are
# "leaked shared_memory objects") or by ``__del__`` during interpreter teardown, once the
# modules it needs are gone ("Exception ignored in SharedMemoryArray.__del__"): a batch the
# program still holds, or one buffered when it stopped. A pickled batch is plain numpy arrays
# that the program owns, with nothing to free at exit.
_NO_SHARED_MEMORY = DatasetOptions(min_shm_size=sys.maxsize)


def allow_unparsed_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Let Grain read its absl flags in a program that has not parsed any.

    Grain's process prefetch reads ``--grain_enable_multiprocess_worker_profiling`` and raises
    ``UnparsedFlagAccessError`` when nothing has parsed the flags (a plain script). Unparsed
    flags are marked parsed at their values (the defaults); parsed ones are left alone. A later
    ``absl.app.run`` or ``FLAGS(argv)`` parses the command line as usual; only reading a flag
    before that returns its default instead of raising.
    """
    if not flag_values.is_parsed():
        flag_values.mark_as_parsed()


def prefetch_in_processes(
    dataset: grain.IterDataset, workers: int, buffer_size: int
) -> grain.IterDataset:
    """``dataset`` made by ``workers`` spawned processes, each ``buffer_size`` elements ahead."""
    allow_unparsed_flags()
    return WithOptionsIterDataset(dataset, _NO_SHARED_MEMORY).mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=buffer_size)
    )
