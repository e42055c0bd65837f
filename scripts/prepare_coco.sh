#!/usr/bin/env bash
# COCO 2017 from the official archives to the TFRecords the experiments read.
#
#   bash scripts/prepare_coco.sh COCO_DIR [OUT_DIR]
#
# COCO_DIR holds the unpacked official archives (train2017.zip, val2017.zip,
# annotations_trainval2017.zip):
#   COCO_DIR/train2017/*.jpg
#   COCO_DIR/val2017/*.jpg
#   COCO_DIR/annotations/instances_train2017.json
#   COCO_DIR/annotations/instances_val2017.json
# OUT_DIR (default: coco, the experiments' default data folder) receives
#   train-00000-of-00256.tfrecord ...   (Model Garden's create_coco_tf_record
#   val-00000-of-00032.tfrecord ...      with --include_masks)
#   instances_val2017.json              (the evaluation's annotation file)
# NUM_TRAIN_SHARDS / NUM_VAL_SHARDS (default 256 / 32) and NUM_PROCESSES
# (default: one per core; 0 for none) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  sed -n 2,17p "$0" >&2
  exit 2
fi
coco_dir=$1
out_dir=${2:-coco}
PY=${PYTHON:-.venv/bin/python}

missing=0
for path in "$coco_dir/train2017" "$coco_dir/val2017" \
    "$coco_dir/annotations/instances_train2017.json" \
    "$coco_dir/annotations/instances_val2017.json"; do
  if [ ! -e "$path" ]; then
    echo "prepare_coco: missing $path (unpack the official COCO 2017 archives into $coco_dir)" >&2
    missing=1
  fi
done
[ "$missing" = 0 ] || exit 1
mkdir -p "$out_dir"

convert() {  # split, shards
  local split=$1 shards=$2
  echo "== ${split}2017 -> $out_dir/$split-*-of-$(printf %05d "$shards").tfrecord"
  local procs=()
  [ -n "${NUM_PROCESSES:-}" ] && procs=(--num_processes="$NUM_PROCESSES")
  "$PY" -m official.vision.data.create_coco_tf_record --logtostderr \
    --include_masks \
    --image_dir="$coco_dir/${split}2017" \
    --object_annotations_file="$coco_dir/annotations/instances_${split}2017.json" \
    --output_file_prefix="$out_dir/$split" \
    --num_shards="$shards" "${procs[@]}"
}
convert train "${NUM_TRAIN_SHARDS:-256}"
convert val "${NUM_VAL_SHARDS:-32}"
cp "$coco_dir/annotations/instances_val2017.json" "$out_dir/instances_val2017.json"
echo "Done: $out_dir"
