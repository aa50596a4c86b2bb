#!/usr/bin/env bash
# Multi-process training with torchrun: tools/dist_train.sh CONFIG NGPUS [tools/train.py options]
# NGPUS processes on this machine, one per GPU; without GPUs, CPU processes talking over gloo
# (torchrun sets OMP_NUM_THREADS=1 unless set). The environment, as in mmdet's dist_train.sh:
#   NNODES       machines taking part (default 1)
#   NODE_RANK    this machine's rank, 0 .. NNODES-1 (default 0)
#   MASTER_ADDR  the address of the machine with NODE_RANK=0 (default 127.0.0.1)
#   PORT         a free port on that machine (default 29500)
#   PYTHON       the interpreter (default python)
# On several machines, run the same command on each with its own NODE_RANK, e.g. two machines
# of 8 GPUs:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_train.sh CONFIG 8   # on 10.1.1.1
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_train.sh CONFIG 8   # on the other
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: [NNODES=N NODE_RANK=R MASTER_ADDR=HOST PORT=P] $0 CONFIG NGPUS [tools/train.py options]" >&2
    exit 2
fi
CONFIG=$1
NGPUS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
if ! [[ "$NNODES" =~ ^[1-9][0-9]*$ && "$NODE_RANK" =~ ^[0-9]+$ && "$NODE_RANK" -lt "$NNODES" ]]; then
    echo "$0: NODE_RANK must be one of 0 .. NNODES-1 and NNODES at least 1; got NNODES=$NNODES NODE_RANK=$NODE_RANK" >&2
    exit 2
fi
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NGPUS" --master_port="${PORT:-29500}" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "$@"
