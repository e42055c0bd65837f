#!/usr/bin/env bash
# The demo: sets up .venv, generates the built-in shapes dataset, trains
# UniPercepNet-S (unipercepnet_shapes) from scratch on it, evaluates COCO box
# and mask AP on its val split, exports a SavedModel, and runs it on the val
# images (COCO results, AP, annotated PNGs).
#   RUN_DIR (default runs/shapes_demo) and DATA_DIR (default data/shapes)
#   may be set; an existing RUN_DIR is replaced. PANOPTIC=1 runs the panoptic
#   demo instead: unipercepnet_panoptic_shapes on the built-in panoptic
#   shapes (defaults runs/panoptic_demo, data/shapes_panoptic), with PQ and
#   panoptic drawings.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
mark=$start
took() {  # Prints the time since the previous call.
  local now; now=$(date +%s)
  echo "   ($(( now - mark )) s)"
  mark=$now
}
echo "== 0/4 Python environment .venv (created on the first run)"
bash scripts/setup_venv.sh
took
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONWARNINGS=ignore
if [ "${PANOPTIC:-0}" = 1 ]; then
  EXPERIMENT=unipercepnet_panoptic_shapes
  DATA_MODULE=data.shapes_panoptic
  DATA_DIR=${DATA_DIR:-data/shapes_panoptic}
  RUN_DIR=${RUN_DIR:-runs/panoptic_demo}
  NAMES="--categories_file=$DATA_DIR/panoptic_val.json"
else
  EXPERIMENT=unipercepnet_shapes
  DATA_MODULE=data.shapes_dataset
  DATA_DIR=${DATA_DIR:-data/shapes}
  RUN_DIR=${RUN_DIR:-runs/shapes_demo}
  NAMES=
fi
PY=.venv/bin/python

echo "== 1/4 Built-in dataset -> $DATA_DIR"
$PY -m $DATA_MODULE --output_dir="$DATA_DIR"
took

echo "== 2/4 Training $EXPERIMENT from scratch, then COCO evaluation"
echo "   (full log in $RUN_DIR/train.log)"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
overrides="task.annotation_file=$DATA_DIR/val.json"
overrides+=",task.train_data.input_path=$DATA_DIR/train-*"
overrides+=",task.validation_data.input_path=$DATA_DIR/val-*"
if ! $PY train.py --experiment=$EXPERIMENT --mode=train_and_eval \
    --model_dir="$RUN_DIR" --params_override="$overrides" \
    2> "$RUN_DIR/train.log" | $PY scripts/progress.py; then
  echo "Training failed; the end of $RUN_DIR/train.log:" >&2
  tail -n 30 "$RUN_DIR/train.log" >&2
  exit 1
fi

took
echo "== 3/4 SavedModel export -> $RUN_DIR/export"
if ! $PY serving/export_saved_model.py --experiment=$EXPERIMENT \
    --config_file="$RUN_DIR/params.yaml" --checkpoint_path="$RUN_DIR" \
    --export_dir="$RUN_DIR/export" 2> "$RUN_DIR/export.log"; then
  echo "Export failed; the end of $RUN_DIR/export.log:" >&2
  tail -n 30 "$RUN_DIR/export.log" >&2
  exit 1
fi

took
echo "== 4/4 The SavedModel on the val images -> $RUN_DIR/predictions"
$PY serving/predict.py --saved_model="$RUN_DIR/export" \
    --images="$DATA_DIR/val/images" --annotation_file="$DATA_DIR/val.json" \
    --output_dir="$RUN_DIR/predictions" --grid=12 --draw_scale=3 $NAMES \
    2>> "$RUN_DIR/export.log" | grep -E "^\[|images,|^COCO|^Panoptic"
$PY - "$RUN_DIR" <<'PY'
import json, os, sys
run = sys.argv[1]
evaluated = json.load(open(os.path.join(run, 'eval_metrics.json')))
served = json.load(open(os.path.join(run, 'predictions', 'metrics.json')))
for key, name in (('AP', 'box'), ('mask_AP', 'mask')):
  print(f'   {name} AP: SavedModel {served[key]:.3f}, '
        f'train_and_eval {evaluated[key]:.3f}')
if 'PQ' in evaluated:
  print('   panoptic quality (train_and_eval): ' + ', '.join(
      f'{k} {evaluated[k]:.3f}' for k in ('PQ', 'PQ_things', 'PQ_stuff')))
PY

took
seconds=$(( $(date +%s) - start ))
echo "Done in $(( seconds / 60 )) min $(( seconds % 60 )) s. The SavedModel's detections on the val images:"
echo "   $RUN_DIR/predictions/grid.png"
