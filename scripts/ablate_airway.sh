#!/usr/bin/env bash
# The thesis's ablation (baseline / +AD / +AD+FRL) at equal budget on CPU: the same phantoms, seed, cuboids,
# schedule and number of steps for each variant, then the held-out evaluation of all three (and classical).
# Small budget on purpose (width 0.25, 480 steps each, about 10 min per variant on 2 cores).
# Usage: scripts/ablate_airway.sh [WORKDIR] (default runs/airway-ablation); needs the phantoms of
# scripts/train_airway_default.sh (DATA=runs/airway-default/data by default). Resumable per variant.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/airway-ablation}
DATA=${DATA:-runs/airway-default/data}
PY=${PY:-.venv/bin/python}
CLINSEG=${CLINSEG:-.venv/bin/clinseg}
EPOCHS=${EPOCHS:-12}
models=()
for variant in baseline ad ad_frl; do
  run="$WORK/$variant"
  if [ ! -f "$run/model.safetensors" ]; then
    "$CLINSEG" train airway --data "$DATA" --out "$run" --variant "$variant" --width 0.25 --patch 64,96,96 \
      --batch 2 --epochs "$EPOCHS" --iters-per-epoch 40 --milestones 0.6,0.85 --val-cases 2 --val-every 1000 \
      --seed 0 --threads 2 --progress none $( [ -f "$run/checkpoints/last.pt" ] && echo --resume )
  fi
  id="airway-ablation-$variant"
  "$PY" scripts/publish_airway_model.py "$run" --id "$id" --dest "$WORK/home/models/$id"
  models+=("$id")
done
list=$(IFS=,; echo "${models[*]}")
CLINSEG_HOME="$WORK/home" "$PY" bench/airway_heldout.py --models "$list" --engines "classical,$list" \
  --seeds "${SEEDS:-1003,1004}" --real "${REAL:-ATM_305}" --cache runs/heldout-cases --json "$WORK/ablation.json"
