"""Export of UniPercepNet-S checkpoints as SavedModels (library).

See `serving/export_saved_model.py` for the command line, and
`serving/detection.py` for the signatures' inputs and outputs.
"""

import copy
import os
from typing import Dict, List, Mapping, Optional, Sequence, Union

from absl import logging
import numpy as np
import tensorflow as tf

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import hyperparams
from official.vision.serving import export_saved_model_lib
import registry_imports  # pylint: disable=unused-import
from common import atomic_io
from configs import validation
from dataloaders import category_ids
from modeling import checkpoints
from serving import detection
from serving import warmup

INPUT_TYPES = ('image_tensor', 'image_bytes', 'tf_example',
               detection.PREPROCESSED_INPUT)
SAVED_MODEL_SUBDIR = 'saved_model'
CHECKPOINT_SUBDIR = 'checkpoint'


# The base of a run's params.yaml given without --experiment: params.yaml
# sets every field, so any UniPercepNet experiment serves as the base.
DEFAULT_EXPERIMENT = 'unipercepnet_coco'


def load_params(experiment: Optional[str],
                config_files: Sequence[str] = (),
                params_override: str = '') -> cfg.ExperimentConfig:
  """The experiment with its YAML files and override string applied.

  `experiment` may be None when `config_files` are given (a training run's
  or a converted checkpoint's params.yaml holds the whole experiment).
  """
  if experiment is None:
    if not config_files:
      raise ValueError('Give --experiment, or --config_file with a run\'s '
                       'params.yaml.')
    experiment = DEFAULT_EXPERIMENT
  try:
    params = exp_factory.get_exp_config(experiment)
  except KeyError as e:
    raise ValueError(f'Unknown --experiment {experiment!r}.') from e
  for path in config_files or []:
    if not tf.io.gfile.exists(path):
      raise ValueError(f'Config file {path!r} does not exist.')
    params = hyperparams.override_params_dict(params, path, is_strict=True)
  if params_override:
    params = hyperparams.override_params_dict(params, params_override,
                                              is_strict=True)
  validation.check(params)
  params.validate()
  return params


def parse_image_size(text: Optional[str]) -> Optional[List[int]]:
  """'H,W' -> [H, W]; None or '' -> None.

  Raises:
    ValueError: naming --input_image_size, if `text` is not two integers.
  """
  if not text:
    return None
  try:
    size = [int(x) for x in text.split(',')]
  except ValueError:
    size = []
  if len(size) != 2:
    raise ValueError(f'--input_image_size must be height,width, got '
                     f'{text!r}.')
  return size


def add_checkpoint_arguments(parser) -> None:
  """The arguments of an argparse export command that name the model:
  --experiment, --config_file, --params_override, --checkpoint_path and
  --input_image_size (see `load_params` and `parse_image_size`)."""
  parser.add_argument('--experiment', default=None,
                      help='Registered experiment, e.g. unipercepnet_coco; '
                      'optional with --config_file=RUN/params.yaml.')
  parser.add_argument('--config_file', action='append', default=[],
                      help="YAML overrides, applied in order (a training "
                      "run's params.yaml works); repeatable.")
  parser.add_argument('--params_override', default='',
                      help='YAML/JSON string of overrides, applied last.')
  parser.add_argument('--checkpoint_path', required=True,
                      help='Checkpoint prefix, or a directory (latest).')
  parser.add_argument('--input_image_size', default=None,
                      help='height,width of the network input; default: '
                      'task.model.input_size.')


def format_function_keys(keys: Mapping[str, str]) -> str:
  """{input_type: signature name} -> 'image_tensor:serving_default,...'."""
  return ','.join(f'{k}:{v}' for k, v in keys.items())


def parse_function_keys(text: str) -> Dict[str, str]:
  """'image_tensor:serving_default,image_bytes:b' -> a dict, validated."""
  keys = {}
  for item in filter(None, (t.strip() for t in text.split(','))):
    input_type, _, name = item.partition(':')
    if input_type not in INPUT_TYPES or not name:
      raise ValueError(f'--function_keys item {item!r}: expected '
                       f'INPUT_TYPE:SIGNATURE_NAME with INPUT_TYPE one of '
                       f'{", ".join(INPUT_TYPES)}.')
    keys[input_type] = name
  return keys


def build_module(params: cfg.ExperimentConfig,
                 checkpoint_path: str,
                 input_type: str = 'image_tensor',
                 batch_size: Optional[int] = None,
                 input_image_size: Optional[Sequence[int]] = None,
                 full_size_masks: bool = False,
                 input_name: Optional[str] = None
                 ) -> detection.UniPercepNetModule:
  """The export module with a checkpoint's inference (EMA) weights.

  Its `params` are a copy of `params` with `task.model.input_size` set to
  the input size and `task.category_ids` written out (so an export needs no
  annotation file). Arguments: see `export`.
  """
  if input_type not in INPUT_TYPES:
    raise ValueError(f'input_type {input_type!r} is not one of {INPUT_TYPES}.')
  params = copy.deepcopy(params)
  size = list(input_image_size or params.task.model.input_size[:2])
  params.task.model.input_size = size + [3]
  params.task.category_ids = category_ids.resolve_category_ids(params.task)
  module = detection.UniPercepNetModule(
      params, batch_size=batch_size, input_image_size=size,
      input_type=input_type, input_name=input_name,
      full_size_masks=full_size_masks)
  try:
    read = checkpoints.restore_inference_weights(
        module.model, checkpoint_path, params.trainer.optimizer_config)
  except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
    raise ValueError(f'Cannot read checkpoint {checkpoint_path!r}: '
                     f'{e.message.splitlines()[0]}') from e
  logging.info('Weights of %s (EMA averages when trained with EMA).', read)
  return module


def check_export_dir(export_dir: str) -> None:
  """Raises ValueError unless `export_dir` is new, empty or an export.

  An export replaces `export_dir` whole, so it must not hold anything else.
  """
  if not tf.io.gfile.isdir(export_dir):
    if tf.io.gfile.exists(export_dir):
      raise ValueError(f'export_dir {export_dir} is a file, not a directory.')
    return
  export_files = {SAVED_MODEL_SUBDIR, CHECKPOINT_SUBDIR, 'params.yaml'}
  others = sorted(name.rstrip('/') for name in tf.io.gfile.listdir(export_dir)
                  if name.rstrip('/') not in export_files)
  if others:
    shown = ', '.join(others[:5]) + (', ...' if len(others) > 5 else '')
    raise ValueError(
        f'export_dir {export_dir} holds {shown}, which are not part of an '
        'export; an export replaces the whole directory. Give a new or empty '
        'directory, or an earlier export.')


def export(params: cfg.ExperimentConfig,
           checkpoint_path: str,
           export_dir: str,
           input_type: str = 'image_tensor',
           batch_size: Optional[int] = None,
           input_image_size: Optional[Sequence[int]] = None,
           function_keys: Optional[Union[List[str], Dict[str, str]]] = None,
           full_size_masks: bool = False,
           input_name: Optional[str] = None,
           warmup_requests: int = 0,
           warmup_images: Optional[Sequence[np.ndarray]] = None,
           model_name: str = warmup.DEFAULT_MODEL_NAME
           ) -> detection.UniPercepNetModule:
  """Writes saved_model/, checkpoint/ and params.yaml under `export_dir`.

  The export is written into a hidden sibling directory and renamed to
  `export_dir` once complete (`atomic_io.atomic_directory`): a failed export
  leaves nothing, and an earlier export in `export_dir` is replaced only by
  a complete one. An existing `export_dir` must be empty or an export.

  Args:
    params: the experiment the checkpoint was trained with.
    checkpoint_path: a checkpoint prefix or a directory (its latest).
    export_dir: the output directory.
    input_type: the input of `serving_default` (one of INPUT_TYPES).
    batch_size: a fixed batch size, or None for a dynamic one.
    input_image_size: [height, width]; default `task.model.input_size`.
    function_keys: {input_type: signature name}; default
      {input_type: 'serving_default'}.
    full_size_masks: see `detection.UniPercepNetModule`.
    input_name: the signatures' input name (default `inputs`).
    warmup_requests: TF Serving warm-up requests per signature and warm-up
      image, written to saved_model/assets.extra/tf_serving_warmup_requests
      (`serving/warmup.py`); 0: none. The command's default is 1.
    warmup_images: uint8 RGB [h, w, 3] images of the warm-up requests;
      default: one synthetic image of the input size.
    model_name: the warm-up requests' model_spec.name (TF Serving's
      --model_name).

  Returns:
    The export module, holding the exported weights.

  Raises:
    ValueError: if `export_dir` holds files an export does not (before
      anything is built), or on the arguments (e.g. more warm-up requests
      than TF Serving reads) or the checkpoint.
  """
  check_export_dir(export_dir)
  default = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
  if not function_keys:
    function_keys = {input_type: default}
  elif not isinstance(function_keys, Mapping):
    if len(function_keys) != 1:
      raise ValueError(f'function_keys {function_keys}: give a dict '
                       '{input_type: signature name} for several signatures.')
    function_keys = {function_keys[0]: default}
  # Checked before the long export.
  warmup.check_count(len(function_keys),
                     1 if warmup_images is None else len(warmup_images),
                     warmup_requests)
  module = build_module(params, checkpoint_path, input_type=input_type,
                        batch_size=batch_size,
                        input_image_size=input_image_size,
                        full_size_masks=full_size_masks,
                        input_name=input_name)
  size = module.params.task.model.input_size[:2]
  # Recorded in the export's params.yaml for its readers (predict.py).
  module.params.task.export.function_keys = format_function_keys(
      function_keys)
  module.params.task.export.full_size_masks = full_size_masks
  # Model Garden writes everything under its export_dir: saved_model/,
  # checkpoint/ (relative paths) and params.yaml.
  with atomic_io.atomic_directory(export_dir) as temporary:
    export_saved_model_lib.export_inference_graph(
        input_type=input_type,
        batch_size=batch_size,
        input_image_size=size,
        params=module.params,
        checkpoint_path=None,  # Already restored, with the EMA weights.
        export_dir=temporary,
        export_module=module,
        export_checkpoint_subdir=CHECKPOINT_SUBDIR,
        export_saved_model_subdir=SAVED_MODEL_SUBDIR,
        function_keys=dict(function_keys),
        input_name=input_name)
    # Inside the temporary directory: the export appears with its warm-up
    # requests or not at all. (Not recorded in params.yaml: task.export has
    # no field for it.)
    if warmup_requests:
      path = warmup.write_warmup_requests(
          os.path.join(temporary, SAVED_MODEL_SUBDIR), module, function_keys,
          images=warmup_images, requests_per_image=warmup_requests,
          model_name=model_name, input_name=input_name,
          batch_size=batch_size)
      logging.info('TF Serving warm-up requests: %s', path)
  return module
