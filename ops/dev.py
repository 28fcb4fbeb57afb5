#!/usr/bin/env python3
"""Set everything up, then run the demo or the test suite: `python3 ops/dev.py demo|test`.

The test command lints first (``ruff check`` and ``ruff format --check``): a lint failure fails it.

Needs only Python 3.11+ (and Node/npm for the Azure emulator used by the tests). Creates
`.venv` beside the repository, installs the package with its `dev` extra, installs azurite
under `ops/node_modules`, then runs the job. Re-running skips what is already installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"


def _run(*args: str | Path, **kwargs: object) -> None:
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT, **kwargs)  # type: ignore[arg-type]


def setup_python() -> None:
    """Create the virtual environment and install the package with its dev extra."""
    if not PYTHON.exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print(
        "installing easydata-grain and its dependencies (a few minutes the first time)", flush=True
    )
    _run(PYTHON, "-m", "pip", "install", "-q", "--upgrade", "pip")
    _run(PYTHON, "-m", "pip", "install", "-q", "-e", ".[dev]")
    stamp.write_text(digest)


def setup_node() -> None:
    """Install the Azure emulator (azurite) under ops/node_modules."""
    if (ROOT / "ops" / "node_modules" / ".bin" / "azurite-blob").exists():
        return
    print("installing azurite (Azure emulator) with npm", flush=True)
    _run("npm", "install", "--prefix", "ops", "--no-audit", "--no-fund", "--loglevel=error")


def main(argv: list[str]) -> int:
    """Run ``demo`` (the main job) or ``test`` (the whole suite) after setting up."""
    if not argv or argv[0] not in {"demo", "test"}:
        print("usage: python3 ops/dev.py demo|test [extra args]", file=sys.stderr)
        return 2
    command, extra = argv[0], argv[1:]
    setup_python()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if command == "demo":
        return subprocess.run(
            [str(VENV / "bin" / "easydata-grain"), "demo", *extra], cwd=ROOT, env=env
        ).returncode
    setup_node()
    for lint in (["check", "."], ["format", "--check", "."]):
        if subprocess.run([str(VENV / "bin" / "ruff"), *lint], cwd=ROOT, env=env).returncode:
            print(f"ruff {' '.join(lint)} failed: run 'ruff check --fix .' and 'ruff format .'")
            return 1
    result = subprocess.run([str(PYTHON), "-m", "pytest", *extra], cwd=ROOT, env=env).returncode
    if result == 5:
        print("pytest collected no tests: that is a failure", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
