#!/usr/bin/env bash
# Retrains the bundled default model (encoders/default_model/) from scratch.
# Documented recipe: training catalog seed 1 (24,000 scenes, each with 6 partial captions such as
# "a red circle" or "something red at the top left"), held-out catalog seed 2 (1,000 scenes, never
# used for training), weights seed 0, 22 epochs, image tower head 1024 wide (--image_head_width; 256 before the fifth
# round, when 14 epochs of the 256-wide head missed the typed-query targets); 70% of the training pairs of every epoch use a partial caption,
# whose positives are every in-batch image holding what it names (--partial_positives); every image also meets 3 hard
# negatives, captions one attribute away from an object it holds (--hard_negatives 3). EXTRA adds train flags.
# benchmarks.short_query_precision measures the result on typed queries (catalog seed 7).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-build/default_model}
OUT=${OUT:-encoders/default_model}
EPOCHS=${EPOCHS:-22}
HEAD_WIDTH=${HEAD_WIDTH:-1024}
SHORT_SHARE=${SHORT_SHARE:-0.7}
HARD_NEGATIVES=${HARD_NEGATIVES:-3}
EXTRA=${EXTRA:-}
mkdir -p "$WORK"
# A training catalog from before partial captions said what they name is regenerated (same scenes, same images).
if ! head -n 1 "$WORK/train/manifest.jsonl" 2>/dev/null | grep -q '"short_caption_objects"'; then
    rm -rf "$WORK/train"
    $PY -m beam_jobs.make_sample_catalog --output_dir "$WORK/train" --num_images 24000 --seed 1 --short_captions 6
fi
[ -f "$WORK/heldout/manifest.jsonl" ] || $PY -m beam_jobs.make_sample_catalog --output_dir "$WORK/heldout" --num_images 1000 --seed 2
rm -rf "$WORK/model"
$PY -m encoders.train --manifest "$WORK/train/manifest.jsonl" --eval_manifest "$WORK/heldout/manifest.jsonl" \
    --output_dir "$WORK/model" --epochs "$EPOCHS" --seed 0 --short_caption_share "$SHORT_SHARE" --partial_positives \
    --hard_negatives "$HARD_NEGATIVES" --image_head_width "$HEAD_WIDTH" $EXTRA
rm -rf "$OUT.new" && mkdir -p "$OUT.new"
cp -r "$WORK/model/." "$OUT.new/"
cp encoders/default_model_README.md "$OUT.new/README.md" 2>/dev/null || true
rm -rf "$OUT" && mv "$OUT.new" "$OUT"
echo "default model written to $OUT"
