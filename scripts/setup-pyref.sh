#!/usr/bin/env bash
# The Python reference environment the benchmarks (and reference scripts) check edgeprune
# against: PyTorch 2.13.0, torchvision, onnx, onnxruntime, numpy, safetensors, Pillow, in a venv
# in the cache (~/.cache/edgeprune/pyref), made once per machine. Idempotent; safe to run from
# several clones at once. Prints the environment's python.
#
#   EDGEPRUNE_CACHE   cache root (default ~/.cache/edgeprune)
set -euo pipefail
cache=${EDGEPRUNE_CACHE:-$HOME/.cache/edgeprune}
env=$cache/pyref
# What is installed: changing this list makes the next run reinstall.
packages="torch==2.13.0 torchvision==0.28.0 onnx onnxruntime numpy safetensors pillow"
stamp=$env/.edgeprune-packages
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$packages" ] && [ -x "$env/bin/python" ]; then
    echo "$env/bin/python"
    exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.pyref.lock"
flock 9
if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$packages" ]; }; then
    echo "setup-pyref: making the reference environment in $env (once per machine)" >&2
    [ -x "$env/bin/python" ] || python3 -m venv "$env"
    # shellcheck disable=SC2086
    "$env/bin/python" -m pip install --quiet $packages >&2
    "$env/bin/python" -c "import torch, torchvision, onnx, onnxruntime, safetensors; print('torch', torch.__version__)" >&2
    echo "$packages" > "$stamp"
fi
echo "$env/bin/python"
