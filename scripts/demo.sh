#!/usr/bin/env bash
# The main job on the embedded default: start the stack, extract all 30 residual-stream layers of
# SmolLM2-135M (real weights, shipped in a Python package) for the shipped questions in one pass, print
# statistics of two layers, read the activations back from Python, and stop the stack.
# Run it through `make demo`, which puts .venv/bin first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

export HF_HUB_OFFLINE=1  # everything it needs is on disk
DATA_DIR=${NEURONMAP_DEMO_DATA:-./neuronmap-data}
QUESTIONS=${NEURONMAP_DEMO_QUESTIONS:-examples/questions.jsonl}
mkdir -p "$DATA_DIR"
PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export NEURONMAP_TARGET=127.0.0.1:$PORT
started=$(date +%s.%N)

neuronmap up --port "$PORT" --lake "$DATA_DIR/lake" --catalog "$DATA_DIR/catalog.duckdb" >"$DATA_DIR/server.log" 2>&1 &
SERVER=$!
stop_server() {
  kill -INT "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
trap stop_server EXIT
if ! neuronmap status --wait 120 >/dev/null; then
  echo "the stack did not come up; its log:" >&2
  cat "$DATA_DIR/server.log" >&2
  exit 1
fi
echo "== NeuronMap is up on $NEURONMAP_TARGET (lake $DATA_DIR/lake)"

echo "== extracting blocks 0-29 (resid_post) of SmolLM2-135M for $(wc -l <"$QUESTIONS") questions"
neuronmap multi-extract --model smollm2_135m --questions-file "$QUESTIONS" --layer-range 0 30 --json \
  >"$DATA_DIR/demo-run.json"
RUN=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["run_id"])' "$DATA_DIR/demo-run.json")
python - "$DATA_DIR/demo-run.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
how = "served from the lake (extracted before)" if run["cached"] else f"{run['tokens_per_second']:,.0f} tokens/s"
print(f"run {run['run_id']}: {len(run['points'])} points x {run['n_tokens']} tokens, {how}")
PY

for layer in blocks.15.resid_post blocks.29.resid_post; do
  echo "== statistics of $layer"
  neuronmap analyze --run "$RUN" --layer "$layer" --top 5
done

echo "== the catalog"
neuronmap runs list --limit 5

echo "== reading the activations back in Python"
python - "$RUN" <<'PY'
import sys
import numpy as np
import neuronmap

run = neuronmap.connect().get_run(sys.argv[1])
acts = run.array("blocks.15.resid_post")
offsets = run.offsets()
first = acts[offsets[0] : offsets[1]]
print(f"blocks.15.resid_post: {acts.shape} {acts.dtype}; prompt 0 has {len(first)} tokens, "
      f"last-token norm {np.linalg.norm(first[-1].astype(np.float32)):.2f}")
PY

stop_server
trap - EXIT
printf '== done in %.1f s\n' "$(echo "$(date +%s.%N) - $started" | bc)"
