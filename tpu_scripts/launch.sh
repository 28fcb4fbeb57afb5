#!/usr/bin/env bash
# Run one command on every worker of a TPU slice (each worker is one JAX process).
#
# Usage: launch.sh TPU_NAME ZONE COMMAND...
#   COMMAND runs in each worker's home directory through `gcloud compute tpus tpu-vm ssh
#   --worker=all`; quote it as one argument. Set PROJECT to pass --project.
#
# Example (train_example.py calls jax.distributed.initialize(), which finds the slice itself):
#   tpu_scripts/launch.sh my-v5e-32 us-west4-a \
#     "~/easydata-venv/bin/python easydata-grain/tpu_scripts/train_example.py \
#      --data 'gs://BUCKET/train/*.parquet' --global-batch 256 --steps 1000 --save-every 100 \
#      --checkpoint-dir gs://BUCKET/ckpt --log /tmp/train-log"
set -euo pipefail

if [[ $# -lt 3 ]]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
NAME=$1
ZONE=$2
shift 2

exec gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" ${PROJECT:+--project "$PROJECT"} \
  --worker=all --command "$*"
