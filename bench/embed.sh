#!/usr/bin/env bash
# Embeddings per second of `caravan serve` against llama.cpp's server
# (`--embedding`, the same GGUF) in the same run: 256 inputs of about 20
# words through /v1/embeddings, all in one request and from 16 concurrent
# clients (bench/embed.py), in alternating rounds. Prints a Markdown table
# of medians, ranges in brackets.
#
#   LLAMA_CPP_BIN=.../build/bin bench/embed.sh [rounds] [model]   (default 3, all-minilm)
#
# CARAVAN_BIN picks the binary (default target/release/caravan); the model
# must be installed beforehand (`caravan pull MODEL`).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
model=${2:-all-minilm}
bin=${CARAVAN_BIN:-target/release/caravan}
models=${CARAVAN_MODELS:-$HOME/.caravan/models}
manifest="$models/manifests/${model/:/@}.json"
[[ -f $manifest ]] || { echo "bench/embed.sh: $model is not installed (caravan pull $model)" >&2; exit 1; }
[[ -n ${LLAMA_CPP_BIN:-} ]] || { echo "bench/embed.sh: LLAMA_CPP_BIN must name llama.cpp's bin/ folder" >&2; exit 1; }
sha=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["sha256"])' "$manifest")
gguf="$models/blobs/sha256-$sha.gguf"
port=${PORT:-18095}
results=$(mktemp)
log=$(mktemp)
server=
stop() { [[ -z $server ]] || { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; server=; }; }
trap 'stop; rm -f "$results" "$log"' EXIT

start() {
  "$@" >"$log" 2>&1 &
  server=$!
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
    kill -0 "$server" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
  done
}
measure() {
  local column=$1 c
  for c in 0 16; do
    python3 bench/embed.py --base-url "http://127.0.0.1:$port" --model "$model" --clients "$c" |
      python3 -c 'import json, sys; r = json.load(sys.stdin); print(sys.argv[1], r["clients"], r["embeddings_per_s"])' "$column"
  done
}
for ((i = 1; i <= rounds; i++)); do
  echo "round $i of $rounds" >&2
  start "$bin" serve --host "127.0.0.1:$port" --max-batch-items 256
  measure caravan >>"$results"
  stop
  LD_LIBRARY_PATH=$LLAMA_CPP_BIN start "$LLAMA_CPP_BIN/llama-server" -m "$gguf" --embedding -t 2 --port "$port"
  measure llama >>"$results"
  stop
done

python3 - "$results" <<'EOF'
import statistics, sys
from collections import defaultdict
seen = defaultdict(list)
for line in open(sys.argv[1]):
    column, clients, value = line.split()
    seen[(column, int(clients))].append(float(value))
def cell(v):
    return f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]"
print("| embeddings/s (256 inputs of ~20 words) | Caravan | llama.cpp | ratio |")
print("|---|---|---|---|")
for clients, name in [(0, "one request of 256"), (16, "16 clients, one input each")]:
    c, l = seen[("caravan", clients)], seen[("llama", clients)]
    print(f"| {name} | {cell(c)} | {cell(l)} | {statistics.median(c) / statistics.median(l):.2f}x |")
EOF
