#!/usr/bin/env bash
# Multi-process training with torchrun: tools/dist_train.sh CONFIG NGPUS [tools/train.py options]
# NGPUS processes on this machine, one per GPU; without GPUs, CPU processes talking over gloo
# (each with OMP_NUM_THREADS=1 unless set). PORT (default 29500) and PYTHON (default python)
# can be set in the environment.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NGPUS [tools/train.py options]" >&2
    exit 2
fi
CONFIG=$1
NGPUS=$2
shift 2
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes=1 --nproc_per_node="$NGPUS" --master_addr=127.0.0.1 --master_port="${PORT:-29500}" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "$@"
