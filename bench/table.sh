#!/usr/bin/env bash
# The README's speed table in one go: the `caravan bench` rows in both
# orders of arithmetic, and llama.cpp's own benchmarks on the same GGUF
# when LLAMA_CPP_BIN names the bin/ folder of a llama.cpp build, in
# alternating rounds (the machine drifts: each round runs every column
# once). Prints a Markdown table of medians, ranges in brackets.
#
#   bench/table.sh [rounds] [model]     (default 3, smollm2:135m)
#
# CARAVAN_BIN picks the binary (default target/release/caravan); the model
# must be installed beforehand (`caravan pull MODEL`).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
model=${2:-smollm2:135m}
bin=${CARAVAN_BIN:-target/release/caravan}
models=${CARAVAN_MODELS:-$HOME/.caravan/models}
manifest="$models/manifests/${model/:/@}.json"
[[ -f $manifest ]] || { echo "bench/table.sh: $model is not installed (caravan pull $model)" >&2; exit 1; }
sha=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["sha256"])' "$manifest")
gguf="$models/blobs/sha256-$sha.gguf"
results=$(mktemp)
trap 'rm -f "$results"' EXIT

# `caravan bench` prints a row per batch size: B, prefill tok/s, decode tok/s, ...
row() { awk -v b="$1" '$1 == b { print $2, $3 }'; }
caravan_round() {
  local order=$1 r
  export CARAVAN_ARITHMETIC=$order
  r=$("$bin" bench "$model" --batch 1 --repeat 1 --shared-prompt 0 2>&1 | row 1)
  echo "$order decode1 ${r#* }"
  r=$("$bin" bench "$model" --batch 32 --repeat 1 --shared-prompt 0 2>&1 | row 32)
  echo "$order prefill32 ${r% *}"
  echo "$order decode32 ${r#* }"
  r=$("$bin" bench "$model" --batch 1 --prompt 512 --gen 2 --repeat 1 --shared-prompt 0 2>&1 | row 1)
  echo "$order prefill512 ${r% *}"
  r=$("$bin" bench "$model" --batch 1 --prompt 3000 --gen 2 --repeat 1 --shared-prompt 0 2>&1 | row 1)
  echo "$order ttft3000 $(python3 -c "print(3000 / ${r% *})")"
}
llama_round() {
  local l=$LLAMA_CPP_BIN
  # CSV rows of pp512, pp3000, tg128: the average tokens/s is the second last field.
  "$l/llama-bench" -m "$gguf" -t 2 -fa on -p 512,3000 -n 128 -r 1 -o csv 2>/dev/null | tr -d '"' |
    awk -F, 'NR == 2 { print "llama prefill512", $(NF-1) } NR == 3 { print "llama ttft3000", 3000 / $(NF-1) } NR == 4 { print "llama decode1", $(NF-1) }'
  "$l/llama-batched-bench" -m "$gguf" -t 2 -fa on -c 16384 -npp 128 -ntg 128 -npl 32 2>/dev/null |
    awk -F'|' '$2 + 0 == 128 && $4 + 0 == 32 { print "llama prefill32", $7 + 0; print "llama decode32", $9 + 0 }'
}
for ((i = 1; i <= rounds; i++)); do
  echo "round $i of $rounds" >&2
  caravan_round ggml >>"$results"
  caravan_round fast >>"$results"
  if [[ -n ${LLAMA_CPP_BIN:-} ]]; then llama_round >>"$results"; fi
done

python3 - "$results" <<'EOF'
import statistics, sys
from collections import defaultdict
seen = defaultdict(list)
for line in open(sys.argv[1]):
    column, metric, value = line.split()
    seen[column, metric].append(float(value))
columns = [c for c in ("ggml", "fast", "llama") if (c, "decode1") in seen]
names = {"ggml": "ggml", "fast": "fast (default)", "llama": "llama.cpp"}
rows = [("decode, 1 sequence (tok/s)", "decode1"), ("32 sequences: prefill (tok/s)", "prefill32"),
        ("32 sequences: decode (tok/s)", "decode32"), ("prefill, 512-token prompt (tok/s)", "prefill512"),
        ("first token, 3,000-token prompt (s)", "ttft3000")]
def cell(values):
    digits = 1 if max(values) < 100 else 0
    f = lambda v: f"{v:.{digits}f}"
    return f"{f(statistics.median(values))} ({f(min(values))}-{f(max(values))})" if len(values) > 1 else f(values[0])
print("| figure | " + " | ".join(names[c] for c in columns) + " |")
print("|---" * (len(columns) + 1) + "|")
for label, metric in rows:
    print(f"| {label} | " + " | ".join(cell(seen[c, metric]) for c in columns) + " |")
EOF
