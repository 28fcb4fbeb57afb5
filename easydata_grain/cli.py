"""The ``easydata-grain`` command: run, bench, inspect or materialize a pipeline config;
inspect, preview and validate a dataset; or run the demo.

Only the standard library is imported here, so ``--help`` and ``--version`` answer at once;
a command imports what it runs (``easydata_grain.commands``) when it is chosen.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from easydata_grain.io.errors import SourceError  # imports only the standard library


def _version() -> str:
    try:
        return metadata.version("easydata-grain")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _count(minimum: int) -> type:
    """An argparse type: an int of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"an int >= {minimum}"
    return parse  # type: ignore[return-value]


def _inspect(args: argparse.Namespace) -> int:
    from easydata_grain.commands.inspection import inspect_url
    from easydata_grain.commands.run import inspect_config, is_config

    if is_config(args.url):
        print(inspect_config(args.url))
        return 0
    print(
        inspect_url(
            args.url,
            batch_size=args.batch_size,
            shuffle_buffer_size=args.shuffle_buffer_size,
            seed=args.seed,
        )
    )
    return 0


def _preview(args: argparse.Namespace) -> int:
    from easydata_grain.commands.preview import preview_url

    print(preview_url(args.url, args.rows))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from easydata_grain.commands.validate import validate_url

    report = validate_url(args.url)
    print(report.text())
    return 1 if report.problems else 0


def _run(args: argparse.Namespace) -> int:
    from easydata_grain.commands.run import run_config

    return run_config(args.config, args.steps, args.resume, args.save_state)


def _bench(args: argparse.Namespace) -> int:
    from easydata_grain.commands.run import bench_config

    print(bench_config(args.config, args.steps))
    return 0


def _materialize(args: argparse.Namespace) -> int:
    from easydata_grain.commands.materialize import materialize_config

    print(
        materialize_config(
            args.config,
            args.output,
            overwrite=args.overwrite,
            engine=args.engine,
            workers=args.workers,
        )
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from easydata_grain.commands.demo import run_demo

    return run_demo(args.shards, args.rows, keep=args.keep)


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    main_parser = argparse.ArgumentParser(
        prog="easydata-grain",
        description="Grain data loading for JAX: look at a dataset, check it, or run the demo.",
        epilog="URL: a path, glob or directory of Parquet or JSON files, local or on a store "
        "(gs://, s3://, az://; credentials from the usual environment variables).",
    )
    main_parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a pipeline config's loader (YAML/JSON) with a progress bar: rows/s, "
        "input-wait fraction, realized mixture",
    )
    run.add_argument("config", metavar="CONFIG")
    run.add_argument("--steps", type=_count(1), default=None, help="(default: one pass)")
    run.add_argument("--resume", metavar="STATE", help="a state file saved by --save-state")
    run.add_argument("--save-state", metavar="STATE", help="write the state here at the end")
    run.set_defaults(run=_run)

    bench = commands.add_parser(
        "bench", help="a pipeline config's rows/s next to plain pyarrow on the same files"
    )
    bench.add_argument("config", metavar="CONFIG")
    bench.add_argument("--steps", type=_count(1), default=200, help="batches (default: 200)")
    bench.set_defaults(run=_bench)

    materialize = commands.add_parser(
        "materialize",
        help="write a pipeline config's rows (tokenized, mixed, packed; before batching) as "
        "Parquet shards and a manifest",
    )
    materialize.add_argument("config", metavar="CONFIG")
    materialize.add_argument(
        "--output", required=True, metavar="URL", help="a local path, s3://, gs:// or az://"
    )
    materialize.add_argument("--overwrite", action="store_true", help="replace an existing output")
    materialize.add_argument(
        "--engine",
        choices=("local", "ray"),
        default=None,
        help="(default: ray when the config's ray.enabled, else local)",
    )
    materialize.add_argument(
        "--workers",
        type=_count(1),
        default=None,
        help="processes or Ray tasks at once (default: the config's)",
    )
    materialize.set_defaults(run=_materialize)

    inspect = commands.add_parser(
        "inspect",
        help="shards, rows, schema and the loader's compiled plan for a dataset, or a "
        "pipeline config's datasets and plan",
    )
    inspect.add_argument("url", metavar="URL|CONFIG")
    inspect.add_argument("--batch-size", type=_count(1), default=8, help="(default: 8)")
    inspect.add_argument(
        "--shuffle-buffer-size", type=_count(0), default=None, help="(default: no shuffle)"
    )
    inspect.add_argument("--seed", type=_count(0), default=0, help="(default: 0)")
    inspect.set_defaults(run=_inspect)

    preview = commands.add_parser("preview", help="the first rows of a dataset, readable")
    preview.add_argument("url", metavar="URL")
    preview.add_argument("-n", "--rows", type=_count(1), default=5, help="(default: 5)")
    preview.set_defaults(run=_preview)

    validate = commands.add_parser(
        "validate",
        help="read every shard once and list every problem (corrupt files, schema drift, "
        "bad JSON rows); exit code 1 when there is any",
    )
    validate.add_argument("url", metavar="URL")
    validate.set_defaults(run=_validate)

    demo = commands.add_parser(
        "demo",
        help="the library end to end on generated data: shuffle, batches, prefetch, an Orbax "
        "checkpoint, exact resume in a new process",
    )
    demo.add_argument("--shards", type=_count(1), default=8, help="(default: 8)")
    demo.add_argument("--rows", type=_count(1), default=25_000, help="rows per shard (25000)")
    demo.add_argument(
        "--keep",
        metavar="DIR",
        help="write the data and checkpoints to DIR and keep them (default: a temporary "
        "directory, removed at the end)",
    )
    demo.set_defaults(run=_demo)
    return main_parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``easydata-grain`` command. A dataset that cannot be read (no files,
    a corrupt file, a bad argument) is reported in one line, with exit status 2."""
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (SourceError, OSError, ValueError, TypeError) as exc:
        print(f"easydata-grain {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
