#!/usr/bin/env bash
# Installs the CPU part of libtorch 2.13.0 (taken from the torch==2.13.0 wheel on PyPI) into a cache
# outside the repository, once per machine, and links it into the checkout as .libtorch so that
# `cargo build` finds it (see .cargo/config.toml). Idempotent; safe to run from several clones.
#
#   EDGEPRUNE_CACHE   cache root (default ~/.cache/edgeprune)
#   EDGEPRUNE_ARCH    x86_64 or aarch64 (default: this machine's, `uname -m`). Another architecture
#                     than this machine's is a cross install: it goes to libtorch-<v>-cpu-<arch>,
#                     is not linked into the checkout, and its path is printed (for LIBTORCH=).
#   LIBTORCH          if set, that libtorch is used instead and nothing is downloaded
set -euo pipefail

TORCH_VERSION=2.13.0
# libtorch_cpu.so of the PyPI wheel is linked against these two CUDA runtime libraries even when
# no GPU is used; they are the versions that torch==2.13.0 pins through cuda-toolkit==13.0.3.
CUDART_PKG=nvidia-cuda-runtime==13.0.96
CUPTI_PKG=nvidia-cuda-cupti==13.0.85

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${EDGEPRUNE_CACHE:-$HOME/.cache/edgeprune}
host=$(uname -m)
arch=${EDGEPRUNE_ARCH:-$host}
case "$arch" in
    x86_64 | aarch64) ;;
    *) echo "setup-libtorch: no torch wheel for architecture '$arch' (x86_64 and aarch64 Linux are supported); set LIBTORCH to a libtorch $TORCH_VERSION built for it" >&2; exit 1 ;;
esac
dest=$cache/libtorch-$TORCH_VERSION-cpu
[ "$arch" = "$host" ] || dest=$dest-$arch

link_into_repo() {
    if [ "$arch" = "$host" ]; then
        ln -sfn "$1" "$repo/.libtorch"
    else
        echo "setup-libtorch: cross install for $arch at $1 (build with LIBTORCH=$1)"
    fi
}

if [ -n "${LIBTORCH:-}" ]; then
    echo "setup-libtorch: using LIBTORCH=$LIBTORCH"
    link_into_repo "$LIBTORCH"
    exit 0
fi

if [ -f "$dest/build-version" ]; then
    link_into_repo "$dest"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.libtorch.lock"
flock 9
if [ -f "$dest/build-version" ]; then   # another clone finished while we waited
    link_into_repo "$dest"
    exit 0
fi

work=$(mktemp -d "$cache/.libtorch-tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "setup-libtorch: fetching torch==$TORCH_VERSION for $arch (about 450 MB, once per machine) into $dest"
pip_dl() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp --platform "manylinux_2_28_$arch" \
        --platform "manylinux_2_27_$arch" --platform "manylinux_2_25_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
        -d "$work/wheels" "$@"
}
pip_dl "torch==$TORCH_VERSION" "$CUDART_PKG" "$CUPTI_PKG"

# The CPU libraries libtorch_cpu.so needs at load time (readelf -d): on aarch64 the wheel also
# carries Arm Compute Library (oneDNN's kernels there) and NVPL BLAS/LAPACK.
libs=('torch/lib/libc10.so' 'torch/lib/libtorch.so' 'torch/lib/libtorch_cpu.so' 'torch/lib/libgomp.so.1')
if [ "$arch" = aarch64 ]; then
    libs+=('torch/lib/libarm_compute.so' 'torch/lib/libarm_compute_graph.so' 'torch/lib/libnvpl_*.so.0')
fi
mkdir -p "$work/out/lib" "$work/x"
unzip -q "$work"/wheels/torch-*.whl 'torch/include/*' "${libs[@]}" -d "$work/x"
mv "$work/x/torch/include" "$work/out/include"
mv "$work"/x/torch/lib/* "$work/out/lib/"
for whl in "$work"/wheels/nvidia_cuda_runtime-*.whl "$work"/wheels/nvidia_cuda_cupti-*.whl; do
    unzip -q "$whl" -d "$work/x/nv"
done
cp "$(find "$work/x/nv" -name 'libcudart.so.13' | head -n1)" "$work/out/lib/"
cp "$(find "$work/x/nv" -name 'libcupti.so.13' | head -n1)" "$work/out/lib/"
# The wheel's libtorch.so only exists to pull in libtorch_cpu.so and libtorch_cuda.so; the
# latter is not installed here, so replace it with a CPU-only equivalent.
rm "$work/out/lib/libtorch.so"
cc=gcc
if [ "$arch" != "$host" ]; then
    cc=$arch-linux-gnu-gcc
    command -v "$cc" >/dev/null || { echo "setup-libtorch: a cross install for $arch needs $cc (Debian: gcc-${arch/_/-}-linux-gnu)" >&2; exit 1; }
fi
"$cc" -shared -o "$work/out/lib/libtorch.so" -x c /dev/null -L"$work/out/lib" -Wl,-rpath-link,"$work/out/lib" \
    -Wl,--no-as-needed -ltorch_cpu -Wl,-rpath,'$ORIGIN'
ln -s libgomp.so.1 "$work/out/lib/libgomp.so"
echo -n "$TORCH_VERSION" > "$work/out/build-version"
echo -n "$arch" > "$work/out/arch"
rm -rf "$dest"
mv "$work/out" "$dest"
link_into_repo "$dest"
echo "setup-libtorch: installed $(du -sh "$dest" | cut -f1) at $dest"
