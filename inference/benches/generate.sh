#!/usr/bin/env bash
# Generation benchmark: cordon-inference against transformers on the same random-weight Llama
# (hidden 2048, 16 layers, GQA 32/4 heads, vocab 32000; 3.4 GB in f32), the same thread count,
# in one run. Prints both sides' prefill and decode tokens/s, the ratios, and cordon's aggregate
# decode tokens/s at 1, 4 and 8 concurrent streams.
#
#   inference/benches/generate.sh [THREADS]      (default: every core)
#
# The model is made once in $CORDON_CACHE/bench-llama (about a minute). The two sides run
# alternately, ROUNDS times (default 2), so that a slower spell of a shared machine falls on both;
# each round prints its own table.
set -euo pipefail
cd "$(dirname "$0")/../.."
source inference/setup.sh
THREADS="${1:-$(nproc)}"
MODEL="${CORDON_CACHE:-$HOME/.cache/cordon}/bench-llama"
if [[ ! -f "$MODEL/config.json" ]]; then
  echo "==> making the benchmark model in $MODEL"
  python inference/benches/baseline.py make "$MODEL"
fi
# Any Llama tokenizer will do for the scheduler's text handling: take the tiny reference one.
TOK=$(mktemp -d)
trap 'rm -rf "$TOK"' EXIT
python inference/tests/reference.py "$TOK" llama >/dev/null 2>&1
cargo build --release -q -p cordon-inference --bench generate
for round in $(seq 1 "${ROUNDS:-2}"); do
echo "==> round $round: transformers, $THREADS threads"
hf=$(python inference/benches/baseline.py run "$MODEL" "$THREADS" 2>/dev/null | tail -n1)
echo "$hf"
echo "==> round $round: cordon-inference, $THREADS threads"
ours=$(CORDON_BENCH_MODEL="$MODEL" CORDON_BENCH_TOKENIZER="$TOK/llama" CORDON_BENCH_THREADS="$THREADS" \
  cargo bench -q -p cordon-inference --bench generate 2>/dev/null | tail -n1)
echo "$ours"
python - "$hf" "$ours" <<'PY'
import json, sys
hf, us = json.loads(sys.argv[1]), json.loads(sys.argv[2])
agg = us["aggregate_tps"]
print(f"| measurement | cordon | transformers | ratio |")
print(f"| --- | --- | --- | --- |")
print(f"| prefill tokens/s (128-token prompt) | {us['prefill_tps']:.1f} | {hf['prefill_tps']:.1f} | {us['prefill_tps']/hf['prefill_tps']:.2f}x |")
print(f"| decode tokens/s, one stream | {us['decode_tps']:.2f} | {hf['decode_tps']:.2f} | {us['decode_tps']/hf['decode_tps']:.2f}x |")
for n in ("4", "8"):
    print(f"| aggregate decode tokens/s, {n} streams | {agg[n]:.2f} | | {agg[n]/agg['1']:.2f}x of 1 stream |")
PY
done
