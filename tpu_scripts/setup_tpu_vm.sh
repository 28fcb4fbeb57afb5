#!/usr/bin/env bash
# Set up one TPU VM worker: a Python venv with jax[tpu] and easydata-grain.
#
# Usage: setup_tpu_vm.sh PACKAGE [VENV_DIR]
#   PACKAGE   what pip installs easydata-grain from: a path on the worker (a checkout, e.g.
#             copied with `gcloud compute tpus tpu-vm scp --recurse . NAME:~/easydata-grain
#             --zone Z --worker=all`) or a pip URL such as
#             git+https://github.com/ORG/easydata-grain.git@main
#   VENV_DIR  where the venv goes (default: ~/easydata-venv)
# Environment: PYTHON, the interpreter to build the venv from (default python3; >= 3.11).
#
# Run it on every worker of a slice at once with launch.sh:
#   tpu_scripts/launch.sh NAME ZONE "bash easydata-grain/tpu_scripts/setup_tpu_vm.sh ~/easydata-grain"
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
PACKAGE=$1
VENV=${2:-$HOME/easydata-venv}
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "$PYTHON is $("$PYTHON" --version 2>&1); easydata-grain needs Python >= 3.11." >&2
  echo "Install one (e.g. sudo apt-get install -y python3.11 python3.11-venv) and rerun" \
    "with PYTHON=python3.11." >&2
  exit 1
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "jax[tpu]"
"$VENV/bin/python" -m pip install --quiet "$PACKAGE"
# Imports only: touching the TPU here would wait for the other workers of the slice.
"$VENV/bin/python" -c 'import jax, easydata_grain; print("jax", jax.__version__, "easydata_grain ok")'
echo "ready: $VENV/bin/python on $(hostname)"
