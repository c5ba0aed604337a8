#!/usr/bin/env bash
# Reproduces the shipped default airway model (airway-unet-phantom) from nothing, on CPU:
# 1. generates the training phantoms (seeds 1-20, in-plane spacing 0.6-1.0 mm, slices 0.6-1.25 mm)
#    in the ATM'22 layout, two at a time; 2. trains the thesis's 3-D U-Net + attention distillation at width 0.5
#    for 2,500 steps at native spacing (bfloat16 mixed precision on CPUs that have it; about 80 min on 2 cores;
#    CPUs without native bfloat16 run float32, measured 1.7x slower per step: docs/airway.md); 3. fine-tunes it
#    for 320 steps on the cases resampled to 0.8 mm (the card's working spacing) with lr 3e-4 and
#    FT_SKELETON_RECALL (default 0.3) x skeleton recall (28 min in float32 on 2 cores): the 1.1.0 model;
#    4. fine-tunes that for another 320 steps with FT2_SKELETON_RECALL (default 1.0) x skeleton recall and half
#    the cuboids centred on the label's centreline (27 min in float32): the 1.2.0 model. FINE_TUNE=0 stops after
#    stage 2 (1.0.0), FINE_TUNE=1 after stage 3 (1.1.0).
# Usage: scripts/train_airway_default.sh [WORKDIR] (default runs/airway-default). Resumable: rerun to continue.
# Candidates for the next shipped model: VARIANT=ad_frl SPACING=0.8 DATA=runs/airway-default/data
# scripts/train_airway_default.sh runs/airway-candidate (same phantoms and budget; defaults reproduce the shipped one).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/airway-default}
CLINSEG=${CLINSEG:-.venv/bin/clinseg}
DATA=${DATA:-$WORK/data}
VARIANT=${VARIANT:-ad}
SPACING=${SPACING:-}
SPACINGS=(0.6,0.6,0.6 0.65,0.65,1.0 0.7,0.7,0.7 0.7,0.7,1.0 0.75,0.75,1.25 0.8,0.8,0.8 0.8,0.8,1.0 0.85,0.85,1.25
          0.9,0.9,0.9 1.0,1.0,1.0 0.6,0.6,1.0 0.65,0.65,0.65 0.7,0.7,1.25 0.75,0.75,0.75 0.8,0.8,1.25 0.85,0.85,0.85
          0.9,0.9,1.25 1.0,1.0,1.25 0.72,0.72,0.8 0.95,0.95,1.0)
mkdir -p "$DATA"
phantom() {  # phantom N: generate training case N unless it exists
  local id
  id=$(printf "phantom_%03d" "$1")
  [ -f "$DATA/labelsTr/$id.nii.gz" ] && return 0
  "$CLINSEG" phantom chest --seed "$1" --spacing "${SPACINGS[$(($1 - 1))]}" --layout atm22 --case-id "$id" \
    --out "$DATA" --progress none > /dev/null
}
for n in $(seq 1 2 20); do  # two at a time; a pair of the finest grids may not fit in memory together,
  phantom "$n" & phantom $((n + 1)) & wait  # so anything missing is retried alone below
done
for n in $(seq 1 20); do phantom "$n"; done
made=$(ls "$DATA"/labelsTr/phantom_*.nii.gz 2> /dev/null | wc -l)
[ "$made" -eq 20 ] || { echo "only $made of 20 training phantoms were generated" >&2; exit 1; }
"$CLINSEG" train airway --data "$DATA" --out "$WORK/run" --variant "$VARIANT" --width 0.5 --patch 64,96,96 \
  --batch 2 --epochs 50 --iters-per-epoch 50 --milestones 0.6,0.85 --val-cases 2 --val-every 10 --seed 0 \
  --threads 2 --max-minutes "${MAX_MINUTES:-110}" ${SPACING:+--spacing "$SPACING"} \
  --progress none $( [ -f "$WORK/run/checkpoints/last.pt" ] && echo --resume )
FINE_TUNE=${FINE_TUNE:-2}
[ "$FINE_TUNE" -ge 1 ] || exit 0
trained=$(($(wc -l < "$WORK/run/log.csv") - 1))  # a time-capped stage 2 must finish before fine-tuning starts
[ "$trained" -ge 50 ] || { echo "stage 2 stopped after epoch $trained of 50: rerun to continue" >&2; exit 0; }
"$CLINSEG" train airway --data "$DATA" --out "$WORK/finetune" --variant "$VARIANT" --width 0.5 --patch 64,96,96 \
  --batch 2 --epochs 8 --iters-per-epoch 40 --milestones 0.6,0.85 --lr 3e-4 --val-cases 2 --val-every 1000 \
  --seed 0 --threads 2 --spacing 0.8 --skeleton-recall "${FT_SKELETON_RECALL:-0.3}" \
  --init "$WORK/run/model.safetensors" --progress none $( [ -f "$WORK/finetune/checkpoints/last.pt" ] && echo --resume )
[ "$FINE_TUNE" -ge 2 ] || exit 0
tuned=$(($(wc -l < "$WORK/finetune/log.csv") - 1))
[ "$tuned" -ge 8 ] || { echo "stage 3 stopped after epoch $tuned of 8: rerun to continue" >&2; exit 0; }
"$CLINSEG" train airway --data "$DATA" --out "$WORK/finetune2" --variant "$VARIANT" --width 0.5 --patch 64,96,96 \
  --batch 2 --epochs 8 --iters-per-epoch 40 --milestones 0.6,0.85 --lr 3e-4 --val-cases 2 --val-every 1000 \
  --seed 0 --threads 2 --spacing 0.8 --skeleton-recall "${FT2_SKELETON_RECALL:-1.0}" --fg-points centerline \
  --fg-fraction 0.5 --init "$WORK/finetune/model.safetensors" --progress none \
  $( [ -f "$WORK/finetune2/checkpoints/last.pt" ] && echo --resume )
