r"""Exports a trained UniPercepNet-S checkpoint as a SavedModel for TF Serving.

  python serving/export_saved_model.py --experiment=unipercepnet_shapes \
      --config_file=runs/shapes_demo/params.yaml \
      --checkpoint_path=runs/shapes_demo --export_dir=runs/shapes_demo/export \
      [--input_type=image_tensor|image_bytes|tf_example] [--batch_size=N] \
      [--input_image_size=H,W] [--function_keys=image_bytes:serving_bytes,...] \
      [--full_size_masks] [--warmup_images=photos/,more/*.jpg,one.png] \
      [--warmup_requests=1] [--model_name=unipercepnet]

Writes `export_dir/saved_model/` (signature `serving_default`, input
`inputs`, dynamic batch unless --batch_size), `export_dir/checkpoint/` (the
exported weights: the EMA averages when training kept them, as evaluation
uses) and `export_dir/params.yaml` (with the category ids written out, so
the export does not need the annotation file). Outputs: see
`serving/detection.py`.

The SavedModel is ready for TensorFlow Serving: it holds warm-up requests
(`saved_model/assets.extra/tf_serving_warmup_requests`, see
`serving/warmup.py`), --warmup_requests per signature and warm-up image
(default 1; 0 writes none), made from the --warmup_images (default: one
synthetic image of the input size), which TF Serving runs when it loads
the model. `serving/tf_serving_replay.py` replays them, and REST request
bodies, with TensorFlow alone.

The export is written beside --export_dir under a hidden name and renamed
to it once complete: a failed export leaves nothing, and an earlier export
there is replaced only by a complete one. An existing --export_dir must be
empty or an earlier export (anything else there is refused, not deleted).

  imported = tf.saved_model.load('DIR/saved_model')
  outputs = imported.signatures['serving_default'](inputs=uint8_images)
"""

import os

from absl import app
from absl import flags

from serving import export_saved_model_lib as export_lib
from serving import warmup

_EXPERIMENT = flags.DEFINE_string(
    'experiment', None, 'Registered experiment, e.g. unipercepnet_coco; '
    'optional with --config_file=RUN/params.yaml.')
_CONFIG_FILE = flags.DEFINE_multi_string(
    'config_file', None, 'YAML overrides, applied in order (a training '
    "run's params.yaml works).")
_PARAMS_OVERRIDE = flags.DEFINE_string(
    'params_override', '', 'YAML/JSON string of overrides, applied last.')
_CHECKPOINT_PATH = flags.DEFINE_string(
    'checkpoint_path', None, 'Checkpoint prefix, or a directory (latest).')
_EXPORT_DIR = flags.DEFINE_string('export_dir', None, 'Output directory.')
_INPUT_TYPE = flags.DEFINE_enum(
    'input_type', 'image_tensor', export_lib.INPUT_TYPES,
    'Input of serving_default: uint8 images, encoded JPEG/PNG bytes, or '
    'serialized tf.Examples with image/encoded.')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', None, 'Fixed batch size; default: dynamic.')
_INPUT_IMAGE_SIZE = flags.DEFINE_string(
    'input_image_size', None,
    'height,width of the network input; default: task.model.input_size.')
_FUNCTION_KEYS = flags.DEFINE_string(
    'function_keys', '',
    'More signatures, as input_type:signature_name pairs separated by '
    'commas, e.g. image_tensor:serving_default,image_bytes:serving_bytes '
    '(replaces --input_type).')
_FULL_SIZE_MASKS = flags.DEFINE_bool(
    'full_size_masks', False,
    'detection_masks as uint8 0/1 masks of the original image size instead '
    'of per-box probabilities.')
_INPUT_NAME = flags.DEFINE_string(
    'input_name', None, 'Signature input name; default: inputs.')
_WARMUP_IMAGES = flags.DEFINE_list(
    'warmup_images', [],
    'Images of the TF Serving warm-up requests: files, folders (their '
    'JPEG/PNG/BMP files) and globs, comma-separated; default: one synthetic '
    'image of the input size.')
_WARMUP_REQUESTS = flags.DEFINE_integer(
    'warmup_requests', 1,
    'TF Serving warm-up requests per signature and warm-up image, in '
    'saved_model/assets.extra/tf_serving_warmup_requests; 0: none.',
    lower_bound=0)
_MODEL_NAME = flags.DEFINE_string(
    'model_name', warmup.DEFAULT_MODEL_NAME,
    "The warm-up requests' model name (TF Serving's --model_name).")


def main(_):
  params = export_lib.load_params(_EXPERIMENT.value, _CONFIG_FILE.value,
                                  _PARAMS_OVERRIDE.value)
  try:
    size = export_lib.parse_image_size(_INPUT_IMAGE_SIZE.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  images = None
  if _WARMUP_IMAGES.value and _WARMUP_REQUESTS.value:
    try:  # Read before the long export.
      images = warmup.load_images(_WARMUP_IMAGES.value)
    except ValueError as e:
      raise app.UsageError(f'--warmup_images: {e}') from e
  export_lib.export(
      params, _CHECKPOINT_PATH.value, _EXPORT_DIR.value,
      input_type=_INPUT_TYPE.value, batch_size=_BATCH_SIZE.value,
      input_image_size=size,
      function_keys=export_lib.parse_function_keys(_FUNCTION_KEYS.value),
      full_size_masks=_FULL_SIZE_MASKS.value,
      input_name=_INPUT_NAME.value,
      warmup_requests=_WARMUP_REQUESTS.value, warmup_images=images,
      model_name=_MODEL_NAME.value)
  saved_model = os.path.join(_EXPORT_DIR.value, export_lib.SAVED_MODEL_SUBDIR)
  print(f'SavedModel: {saved_model}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['checkpoint_path', 'export_dir'])
  app.run(main)
