#!/usr/bin/env bash
# Demo: train on the APS data, build the serving image, start it hardened, send it real rows.
set -euo pipefail
BIN="${BIN:-.venv/bin}"
IMAGE="${IMAGE:-linkedge/aps-classifier:demo}"
DATA="${LINKEDGE_DATA_DIR:-../shared/aps}"
OUT="build/demo"
PORT="${PORT:-18080}"
cli() { "$BIN/python" -m inference_image "$@"; }

rm -rf "$OUT" && mkdir -p "$OUT"
echo "== 1/4 train on $DATA (nested CV for the official cost)"
cli train --data "$DATA" --out "$OUT/bundle" | tee "$OUT/train.json"
echo "== 2/4 build $IMAGE"
cli build --bundle "$OUT/bundle" --tag "$IMAGE" | tee "$OUT/build.json"
echo "== 3/4 export for trucks without a registry"
cli export --image "$IMAGE" --out "$OUT/export" | tee "$OUT/export.json"
echo "== 4/4 run it (read-only, no capabilities, non-root) and send real rows"
docker rm -f linkedge-demo >/dev/null 2>&1 || true
docker run -d --name linkedge-demo -p "127.0.0.1:$PORT:8080" --read-only --tmpfs /tmp \
  --cap-drop ALL --security-opt no-new-privileges "$IMAGE" >/dev/null
trap 'docker rm -f linkedge-demo >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 100); do
  cli healthcheck --port "$PORT" 2>/dev/null && break
  sleep 0.1
done
cli send --url "http://127.0.0.1:$PORT" --csv "$DATA/aps_failure_test_set.unlabeled-sample.csv" --rows 1000 --show 5
echo "metrics: $(curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^linkedge_predictions_total' | tr '\n' ' ')"
