"""Worker processes (Grain's ``mp_prefetch``) that work in any program, with or without absl."""

from __future__ import annotations

from absl import flags


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
