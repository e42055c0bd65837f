"""Checks of an experiment's values, run whenever an experiment is loaded.

Model Garden's overrides accept any value for any key
(`--params_override=task.model.num_classes=abc` is stored as the string
'abc' and fails much later, deep inside the model). `check` walks the whole
config and compares every value with its field's annotation, then checks
the ranges this project's settings need; one error lists every bad key.
"""

import dataclasses
import math
import typing
from typing import Any, Iterator, List, Tuple

from official.modeling.hyperparams import base_config

_NONE = type(None)


def _type_name(annotation: Any) -> str:
  return getattr(annotation, '__name__', None) or str(annotation).replace(
      'typing.', '')


def _matches(value: Any, annotation: Any) -> bool:
  """Whether `value` is of the annotated type (unknown annotations pass)."""
  if annotation is Any:
    return True
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin is typing.Union:
    return any(_matches(value, a) for a in args)
  if origin in (list, tuple, typing.List, typing.Tuple):
    if not isinstance(value, (list, tuple)):
      return False
    if not args:
      return True
    if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:
      return len(value) == len(args) and all(
          _matches(v, a) for v, a in zip(value, args))
    return all(_matches(v, args[0]) for v in value)
  if annotation is _NONE:
    return value is None
  if annotation is bool:
    return isinstance(value, bool)
  if annotation is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if annotation is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if annotation is str:
    return isinstance(value, str)
  if isinstance(annotation, type) and issubclass(annotation,
                                                 base_config.Config):
    return value is None or isinstance(value, base_config.Config)
  return True


def _fields(config: base_config.Config) -> Iterator[Tuple[str, Any, Any]]:
  """(name, annotation, value) of a config's dataclass fields."""
  try:
    hints = typing.get_type_hints(type(config))
  except Exception:  # pylint: disable=broad-except
    hints = {}
  for field in dataclasses.fields(config):
    if field.name in hints:
      yield field.name, hints[field.name], getattr(config, field.name, None)


def type_errors(config: base_config.Config, prefix: str = '') -> List[str]:
  """Every value whose type is not its field's annotation, with its key."""
  errors = []
  for name, annotation, value in _fields(config):
    key = prefix + name
    if isinstance(value, base_config.Config):
      errors += type_errors(value, key + '.')
      continue
    if isinstance(value, (list, tuple)) and any(
        isinstance(v, base_config.Config) for v in value):
      for i, v in enumerate(value):
        if isinstance(v, base_config.Config):
          errors += type_errors(v, f'{key}[{i}].')
      continue
    if not _matches(value, annotation):
      errors.append(f'{key} is {value!r} ({type(value).__name__}); it must '
                    f'be {_type_name(annotation)}.')
  return errors


def _get(params: base_config.Config, key: str) -> Any:
  value = params
  for part in key.split('.'):
    value = getattr(value, part)
  return value


def range_errors(params: base_config.Config) -> List[str]:
  """The ranges this project's settings need, for a well-typed config."""
  errors = []

  def need(key, ok, what):
    try:
      value = _get(params, key)
    except AttributeError:
      return
    if value is not None and not ok(value):
      errors.append(f'{key} is {value!r}; it must be {what}.')

  positive = lambda v: v > 0
  need('task.model.num_classes', positive, '>= 1')
  need('task.model.input_size',
       lambda v: len(v) == 3 and v[2] == 3 and all(
           s is None or s > 0 for s in v[:2]),
       '[height, width, 3] with positive sides')
  need('task.train_data.global_batch_size', positive, '>= 1')
  need('task.validation_data.global_batch_size', positive, '>= 1')
  need('task.schedule.epochs', positive, '>= 1')
  need('task.steps_per_epoch', lambda v: v >= 0, '>= 0 (0: counted)')
  need('task.model.anchor.anchor_size', positive, '> 0')
  need('task.model.anchor.scales', lambda v: all(s > 0 for s in v),
       'positive')
  need('task.model.anchor.aspect_ratios', lambda v: all(s > 0 for s in v),
       'positive')
  need('task.train_data.parser.aug_scale_min', positive, '> 0')
  need('task.train_data.parser.aug_scale_max',
       lambda v: v >= params.task.train_data.parser.aug_scale_min,
       '>= task.train_data.parser.aug_scale_min')
  fraction = lambda v: 0 <= v <= 1
  need('task.losses.semantic_weight', lambda v: v >= 0, '>= 0')
  need('task.model.panoptic.stuff_category_ids',
       lambda v: all(0 < i < 255 for i in v) and len(set(v)) == len(v),
       'distinct ids in 1..254 (the records\' uint8 panoptic masks)')
  for key in ('score_threshold', 'overlap_threshold', 'mask_threshold'):
    need(f'task.model.panoptic.fusion.{key}', fraction, 'in [0, 1]')
  need('task.model.panoptic.fusion.stuff_area_threshold',
       lambda v: v >= 0, '>= 0')
  lr = params.trainer.optimizer_config.learning_rate
  if lr.type:
    schedule = lr.get()
    for name in ('initial_learning_rate', 'learning_rate', 'values'):
      value = getattr(schedule, name, None)
      values = value if isinstance(value, (list, tuple)) else [value]
      if value is not None and not all(
          isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
          for v in values):
        errors.append(f'trainer.optimizer_config.learning_rate.{lr.type}.'
                      f'{name} is {value!r}; learning rates must be finite '
                      'and >= 0.')
  return errors


def check(params: base_config.Config) -> None:
  """Raises ValueError naming every key whose value is of the wrong type or
  out of range."""
  errors = type_errors(params)
  if not errors:
    errors = range_errors(params)
  if errors:
    raise ValueError('Invalid experiment config:\n  ' + '\n  '.join(errors))
