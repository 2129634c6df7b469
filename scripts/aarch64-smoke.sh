#!/usr/bin/env bash
# ARM64 check (issue "Pruned models that are really faster where they run", item 6): cross-builds
# edgeprune for aarch64-unknown-linux-gnu against the aarch64 torch and onnxruntime wheels, then
# runs the aarch64 binary under qemu-user on tiny real data: inspect, a two-batch train, prune,
# eval in libtorch and in ONNX Runtime. Installs what it needs (Debian's cross gcc and qemu-user,
# the Rust target, the aarch64 wheels into ~/.cache/edgeprune); idempotent. `make test-aarch64`.
#
#   EDGEPRUNE_DATA   where cifar10-images.tar.gz is (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
cache=${EDGEPRUNE_CACHE:-$HOME/.cache/edgeprune}
data=${EDGEPRUNE_DATA:-../shared/data}/cifar10-images.tar.gz
sysroot=/usr/aarch64-linux-gnu

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "aarch64-smoke: needs Debian packages ${need[*]} (run as root, or install them)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

EDGEPRUNE_ARCH=aarch64 scripts/setup-libtorch.sh
EDGEPRUNE_ARCH=aarch64 scripts/setup-onnxruntime.sh
libtorch=$(ls -d "$cache"/libtorch-*-cpu-aarch64 | head -n1)
ort=$(ls "$cache"/onnxruntime-*-aarch64/libonnxruntime.so | head -n1)

# LIBTORCH from the environment wins over .cargo/config.toml's (the x86-64 .libtorch link).
LIBTORCH=$libtorch CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    cargo build --release --target "$target" --bin edgeprune
bin=target/$target/release/edgeprune
file -L "$bin" | grep -q 'ARM aarch64' || { echo "aarch64-smoke: $bin is not an aarch64 executable" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/edgeprune-aarch64.XXXXXX")
trap 'rm -rf "$work"' EXIT
# 20 training and 10 test images of each of the ten classes, as an ImageFolder.
tar -xzf "$data" -C "$work" --wildcards 'train/*/00[0-1]?.jpg' 'test/*/000?.jpg'
# qemu-user (7.2, Debian 12) passes the host's x86 /proc/cpuinfo through, on which libtorch's cpuinfo
# finds no Arm core and crashes; qemu looks up absolute paths under -L first, so a sysroot overlay
# gives the emulated Neoverse-N1 (Graviton2-class) the cpuinfo and MIDR a real one has.
ov=$work/sysroot
mkdir -p "$ov/proc"
ln -s "$sysroot/lib" "$ov/lib"
for i in 0 1; do
    printf 'processor\t: %d\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$i"
    mkdir -p "$ov/sys/devices/system/cpu/cpu$i/regs/identification"
    echo 0x00000000413fd0c1 >"$ov/sys/devices/system/cpu/cpu$i/regs/identification/midr_el1"
done >"$ov/proc/cpuinfo"
run() {
    echo "+ edgeprune $*"
    qemu-aarch64 -cpu neoverse-n1 -L "$ov" "$bin" "$@"
}
run inspect resnet20 | tail -n1
run init resnet20 -o "$work/fresh"
run train --model "$work/fresh" --data "$work" --epochs 1 --batch-size 8 --max-batches 2 \
    --threads 2 --checkpoint-epochs 1 -o "$work/run"
test -f "$work/run/summary.json"
run prune "$work/run/best" --level 50 --criterion l1 -o "$work/pruned"
run eval "$work/pruned" --data "$work" --json | tee "$work/eval.json"
grep -q '"top1"' "$work/eval.json"
EDGEPRUNE_ONNXRUNTIME=$ort run eval "$work/pruned" --data "$work" --runtime ort --json | tee "$work/eval-ort.json"
grep -q '"top1"' "$work/eval-ort.json"
# The same model on this machine's own build (when there is one) scores the same images alike.
host_bin=target/release/edgeprune
if [ -x "$host_bin" ]; then
    "$host_bin" eval "$work/pruned" --data "$work" --json >"$work/eval-host.json"
    loss() { sed -n 's/.*"loss": \([^,]*\),.*/\1/p' "$1"; }
    top1() { sed -n 's/.*"top1": \([^,]*\),.*/\1/p' "$1"; }
    awk -v a="$(loss "$work/eval.json")" -v b="$(loss "$work/eval-host.json")" -v c="$(top1 "$work/eval.json")" -v d="$(top1 "$work/eval-host.json")" \
        'BEGIN { d2 = a - b; if (d2 < 0) d2 = -d2; if (d2 > 1e-3 * (b < 0 ? -b : b) || c != d) { print "aarch64-smoke: aarch64 loss " a " top1 " c " but x86-64 loss " b " top1 " d; exit 1 }
                 print "aarch64-smoke: aarch64 and x86-64 agree: loss " a " vs " b ", top1 " c " vs " d }'
fi
echo "aarch64-smoke: ok ($bin under qemu-aarch64)"
