#!/usr/bin/env bash
# Set up the project's virtual environment in .venv: PyTorch, timm, OpenMMLab (with mmcv
# 2.1.0 built from source with its compiled ops), ONNX, and the test tools.
#
# Idempotent and resumable: every step is skipped when its result is already there, the
# mmcv wheel is cached in $ZOO_WHEEL_CACHE (default ~/.cache/zoo/wheels) and its build is
# logged to $ZOO_WHEEL_CACHE/mmcv-build.log. Versions are pinned here and in setup.cfg.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv="${ZOO_VENV:-$repo/.venv}"
cache="${ZOO_WHEEL_CACHE:-$HOME/.cache/zoo/wheels}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

TORCH=2.14.1
TORCHVISION=0.29.1
MMCV=2.1.0
NATTEN=0.21.7
# setuptools 81+ drops pkg_resources, which mmcv's build imports.
BUILD_TOOLS="setuptools==80.9.0 wheel==0.45.1 ninja==1.13.0 psutil==7.2.2"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# A stamp over everything that decides the environment: when none of it changed, the
# whole setup is a no-op.
stamp_src=$(cat "$repo/setup.cfg" "$0" | sha256sum | cut -c1-16)
stamp="$venv/.zoo-setup-$stamp_src"
if [ -f "$stamp" ]; then
    log "environment up to date ($venv)"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv with $($python --version)"
    "$python" -m venv "$venv"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# This machine's pip config lists local package folders that pip warns about on every
# call; keep the log readable.
pip() { "$venv/bin/python" -m pip "$@" 2> >(grep -v 'is neither a file nor a directory' >&2); }

# PyPI's Linux torch wheel brings the CUDA libraries (and Triton) along: a full environment
# is about 6.5 GB. Say so up front rather than leave pip's bare "No space left on device".
need_gb=7
free_gb=$(df -Pk "$venv" | awk 'NR == 2 { printf "%d", $4 / 1048576 }')
if [ "$free_gb" -lt "$need_gb" ] && ! compgen -G "$venv/lib/python*/site-packages/torch" >/dev/null; then
    log "warning: $free_gb GB free where $venv lives; a new environment takes about $need_gb GB" \
        "(torch's PyPI wheel brings 3.2 GB of CUDA libraries)"
fi

log "installing torch $TORCH, torchvision $TORCHVISION and build tools"
pip install -q "torch==$TORCH" "torchvision==$TORCHVISION" $BUILD_TOOLS

mkdir -p "$cache"
tag=$("$venv/bin/python" -c "import sys, torch; print(f'cp{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.split(\"+\")[0]}')")
wheel_dir="$cache/mmcv-$MMCV-$tag"
if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    # PyPI only has mmcv's source. Build it once with its C++ ops for this torch and keep
    # the wheel, which is tied to this torch and Python.
    build="$cache/mmcv-build"
    rm -rf "$build" && mkdir -p "$build"
    log "downloading the mmcv $MMCV source"
    pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$build" "mmcv==$MMCV"
    tar -xzf "$build"/mmcv-$MMCV.tar.gz -C "$build"
    # torch >= 2.10 headers need C++20; mmcv asks for C++14/17.
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$build/mmcv-$MMCV/setup.py"
    log "building mmcv $MMCV with its ops (about 10 minutes on 2 idle cores; log: $cache/mmcv-build.log)"
    (cd "$build/mmcv-$MMCV" && env -u FORCE_CUDA MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
        "$venv/bin/python" -m pip wheel --no-deps --no-build-isolation -w "$build/out" . ) > "$cache/mmcv-build.log" 2>&1 || {
        log "mmcv build failed; the last lines of $cache/mmcv-build.log:"; tail -30 "$cache/mmcv-build.log"; exit 1; }
    mkdir -p "$wheel_dir" && mv "$build"/out/mmcv-*.whl "$wheel_dir"/ && rm -rf "$build"
fi
log "installing mmcv from $wheel_dir"
pip install -q --no-deps "$wheel_dir"/mmcv-*.whl

# NATTEN ships as source; its CPU path is pure PyTorch, but its build imports torch, so
# it is built against the installed torch rather than in an isolated environment.
log "installing natten $NATTEN"
pip install -q --no-deps --no-build-isolation "natten==$NATTEN"

log "installing the zoo with its mm, onnx, natten and dev extras"
pip install -q -e "$repo[mm,onnx,natten,dev]"

"$venv/bin/python" - <<'PY'
import torch, timm, mmcv, mmdet, mmseg, natten, onnxruntime
from mmcv.ops import RoIAlign, nms  # the compiled ops must be there
print(f'torch {torch.__version__}, timm {timm.__version__}, mmcv {mmcv.__version__}, '
      f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, onnxruntime {onnxruntime.__version__}')
PY
rm -f "$venv"/.zoo-setup-*
touch "$stamp"
log "done"
