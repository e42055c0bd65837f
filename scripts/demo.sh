#!/usr/bin/env bash
# The demo: sets up .venv, generates the built-in shapes dataset, trains
# UniPercepNet-S (unipercepnet_shapes) from scratch on it, evaluates COCO box
# and mask AP on its val split and draws predictions on val images.
#   RUN_DIR (default runs/shapes_demo) and DATA_DIR (default data/shapes)
#   may be set; an existing RUN_DIR is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup_venv.sh
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONWARNINGS=ignore
DATA_DIR=${DATA_DIR:-data/shapes}
RUN_DIR=${RUN_DIR:-runs/shapes_demo}
PY=.venv/bin/python

echo "== 1/3 Built-in dataset -> $DATA_DIR"
$PY dataloaders/shapes_dataset.py --output_dir="$DATA_DIR"

echo "== 2/3 Training unipercepnet_shapes from scratch, then COCO evaluation"
echo "   (progress every 25 steps; full log in $RUN_DIR/train.log)"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
overrides="task.annotation_file=$DATA_DIR/val.json"
overrides+=",task.train_data.input_path=$DATA_DIR/train-*"
overrides+=",task.validation_data.input_path=$DATA_DIR/val-*"
if ! $PY train.py --experiment=unipercepnet_shapes --mode=train_and_eval \
    --model_dir="$RUN_DIR" --params_override="$overrides" \
    2> "$RUN_DIR/train.log" \
    | grep --line-buffered -E "^(train|eval) \||^ *\{?'(total_loss|AP|mask_AP)'|^Evaluation|^  (box|mask) |^All metrics"; then
  echo "Training failed; the end of $RUN_DIR/train.log:" >&2
  tail -n 30 "$RUN_DIR/train.log" >&2
  exit 1
fi

echo "== 3/3 Predictions on val images"
$PY tools/show_predictions.py --model_dir="$RUN_DIR" \
    --images="$DATA_DIR/val/images/*.png" --output="$RUN_DIR/val_predictions.png" \
    2>> "$RUN_DIR/train.log"

echo "Done in $(( $(date +%s) - start )) s."
