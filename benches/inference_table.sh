#!/usr/bin/env bash
# Inference latency of the CIFAR zoo (ResNet-20, MobileNetV2, SqueezeNet), unpruned and pruned
# (the paper criterion at 50% of the parameters), at batch 1 and 64, in edgeprune's engine
# (libtorch, BatchNorm folded), in ONNX Runtime (the model as `edgeprune export` writes it, run
# in-process with `--runtime ort`) and in PyTorch eager (benches/torch_bench.py), all in one run,
# alternated round by round. Writes OUT_CSV and a Markdown table beside it.
#
#   benches/inference_table.sh [OUT_CSV] [ROUNDS] [THREADS]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
csv=${1:-$repo/results/inference_runtimes.csv}
rounds=${2:-3}; threads=${3:-2}
py=${PYTHON:-$("$repo/scripts/setup-pyref.sh")}
bin=$repo/target/release/edgeprune
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$bin" init mobilenetv2 --num-classes 10 -o "$tmp/mobilenetv2" > /dev/null
ln -s "$repo/models/resnet20-cifar10" "$tmp/resnet20"
ln -s "$repo/models/squeezenet-cifar10" "$tmp/squeezenet"
for net in resnet20 mobilenetv2 squeezenet; do
    "$bin" prune "$tmp/$net" --level 50 -o "$tmp/$net-p50" > /dev/null 2>&1
done
echo "network,variant,batch,runtime,round,median_ms" > "$tmp/raw.csv"
for r in $(seq "$rounds"); do
    for net in resnet20 mobilenetv2 squeezenet; do
        for variant in unpruned p50; do
            m=$tmp/$net; [ "$variant" = unpruned ] || m=$tmp/$net-p50
            for b in 1 64; do
                steps=$([ "$b" = 1 ] && echo 100 || echo 10)
                for rt in libtorch ort; do
                    ms=$("$bin" bench infer --model "$m" --batch "$b" --steps "$steps" --warmup 5 --threads "$threads" \
                        --runtime "$rt" --json | "$py" -c "import json,sys; print(1e3*json.load(sys.stdin)['step_seconds']['median'])")
                    echo "$net,$variant,$b,$rt,$r,$ms" >> "$tmp/raw.csv"
                done
                ms=$("$py" "$repo/benches/torch_bench.py" infer "$m" --batch "$b" --threads "$threads" --steps "$steps" \
                    --warmup 5 | "$py" -c "import json,sys; print(1e3*json.load(sys.stdin)['step_seconds']['median'])")
                echo "$net,$variant,$b,pytorch,$r,$ms" >> "$tmp/raw.csv"
            done
        done
    done
done
"$py" - "$tmp/raw.csv" "$csv" "$rounds" "$threads" <<'PY'
import csv, statistics, sys
raw, out, rounds, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = list(csv.DictReader(open(raw)))
key = lambda r: (r["network"], r["variant"], int(r["batch"]))
med = {}
for r in rows:
    med.setdefault(key(r), {}).setdefault(r["runtime"], []).append(float(r["median_ms"]))
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["network", "variant", "batch", "libtorch_ms", "onnxruntime_ms", "pytorch_ms",
                "libtorch_over_onnxruntime", "libtorch_over_pytorch"])
    lines = ["| network | variant | batch | edgeprune (libtorch) ms | ONNX Runtime ms | PyTorch eager ms | "
             "edgeprune / ORT | edgeprune / PyTorch |", "|---|---|---|---|---|---|---|---|"]
    for k in sorted(med, key=lambda k: (["resnet20", "mobilenetv2", "squeezenet"].index(k[0]), k[1] != "unpruned", k[2])):
        m = {rt: statistics.median(v) for rt, v in med[k].items()}
        a, o, p = m["libtorch"], m["ort"], m["pytorch"]
        w.writerow([*k, f"{a:.3f}", f"{o:.3f}", f"{p:.3f}", f"{a / o:.2f}", f"{a / p:.2f}"])
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {a:.3f} | {o:.3f} | {p:.3f} | {a / o:.2f}x | {a / p:.2f}x |")
md = out.rsplit(".", 1)[0] + ".md"
open(md, "w").write(f"Median per batch over {rounds} alternated rounds, {threads} threads.\n\n" + "\n".join(lines) + "\n")
print(open(md).read())
PY
