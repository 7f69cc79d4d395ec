#!/usr/bin/env bash
# Served throughput and latency of `caravan serve` under 1, 4, 16 and 64
# concurrent streaming clients (64-word prompts, 64 tokens each), with the
# standard load generator bench/loadgen.py. Prints a Markdown table.
#
#   bench/serve.sh [extra caravan serve flags...]
#
# CARAVAN_BIN picks the binary (default target/release/caravan);
# CONCURRENCY overrides the sweep (e.g. CONCURRENCY="1 16").
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARAVAN_BIN:-target/release/caravan}
port=${PORT:-18090}
log=$(mktemp)
"$bin" serve --host "127.0.0.1:$port" "$@" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.2
done
row='
import json, sys
r = json.load(sys.stdin)
t = r["ttft_s"]
print("| %d | %d | %.0f | %.2f | %.2f | %d |" % (r["concurrency"], r["requests"], r["output_tok_s"], t["p50"], t["p99"], r["errors"]))'
echo "| clients | requests | output tok/s | TTFT p50 (s) | TTFT p99 (s) | errors |"
echo "|---|---|---|---|---|---|"
for c in ${CONCURRENCY:-1 4 16 64}; do
  n=$(( c < 4 ? 8 : 2 * c ))
  python3 bench/loadgen.py --base-url "http://127.0.0.1:$port" --requests "$n" --concurrency "$c" \
    --prompt-tokens 64 --max-tokens 64 --stream --warmup 1 --seed "$c" | python3 -c "$row"
done
