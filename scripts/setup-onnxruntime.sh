#!/usr/bin/env bash
# Installs ONNX Runtime's shared library (taken from the onnxruntime wheel on PyPI) into a cache
# outside the repository, once per machine: edgeprune loads it at run time (`--runtime ort`); no
# download at build time, no Python at run time. Idempotent; safe to run from several clones.
#
#   EDGEPRUNE_CACHE   cache root (default ~/.cache/edgeprune)
#   EDGEPRUNE_ARCH    x86_64 or aarch64 (default: this machine's, `uname -m`). Another architecture
#                     than this machine's is a cross install, into onnxruntime-<v>-<arch>.
set -euo pipefail

ORT_VERSION=1.32.0
cache=${EDGEPRUNE_CACHE:-$HOME/.cache/edgeprune}
host=$(uname -m)
arch=${EDGEPRUNE_ARCH:-$host}
case "$arch" in
    x86_64 | aarch64) ;;
    *) echo "setup-onnxruntime: no onnxruntime wheel for architecture '$arch' (x86_64 and aarch64 Linux are supported)" >&2; exit 1 ;;
esac
dest=$cache/onnxruntime-$ORT_VERSION
[ "$arch" = "$host" ] || dest=$dest-$arch

if [ -f "$dest/version" ]; then
    exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.onnxruntime.lock"
flock 9
if [ -f "$dest/version" ]; then   # another clone finished while we waited
    exit 0
fi
work=$(mktemp -d "$cache/.onnxruntime-tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "setup-onnxruntime: fetching onnxruntime==$ORT_VERSION for $arch (about 20 MB, once per machine) into $dest"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform "manylinux_2_28_$arch" \
    --platform "manylinux_2_27_$arch" --platform "manylinux_2_25_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
    -d "$work/wheels" "onnxruntime==$ORT_VERSION"
mkdir -p "$work/out" "$work/x"
unzip -q "$work"/wheels/onnxruntime-*.whl 'onnxruntime/capi/libonnxruntime.so*' -d "$work/x"
mv "$work"/x/onnxruntime/capi/libonnxruntime.so* "$work/out/"
ln -s "$(cd "$work/out" && ls libonnxruntime.so.* | head -n1)" "$work/out/libonnxruntime.so"
echo -n "$ORT_VERSION" > "$work/out/version"
rm -rf "$dest"
mv "$work/out" "$dest"
echo "setup-onnxruntime: installed $(du -sh "$dest" | cut -f1) at $dest"
