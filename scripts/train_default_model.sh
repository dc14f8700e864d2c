#!/usr/bin/env bash
# Retrains the bundled default model (encoders/default_model/) from scratch.
# Documented recipe: training catalog seed 1 (24,000 scenes), held-out catalog
# seed 2 (1,000 scenes, never used for training), weights seed 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-build/default_model}
OUT=${OUT:-encoders/default_model}
mkdir -p "$WORK"
[ -f "$WORK/train/manifest.jsonl" ] || $PY -m beam_jobs.make_sample_catalog --output_dir "$WORK/train" --num_images 24000 --seed 1
[ -f "$WORK/heldout/manifest.jsonl" ] || $PY -m beam_jobs.make_sample_catalog --output_dir "$WORK/heldout" --num_images 1000 --seed 2
rm -rf "$WORK/model"
$PY -m encoders.train --manifest "$WORK/train/manifest.jsonl" --eval_manifest "$WORK/heldout/manifest.jsonl" \
    --output_dir "$WORK/model" --epochs 6 --seed 0
rm -rf "$OUT.new" && mkdir -p "$OUT.new"
cp -r "$WORK/model/." "$OUT.new/"
cp encoders/default_model_README.md "$OUT.new/README.md" 2>/dev/null || true
rm -rf "$OUT" && mv "$OUT.new" "$OUT"
echo "default model written to $OUT"
