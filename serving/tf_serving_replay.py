r"""Replays TF Serving requests on a SavedModel, with TensorFlow alone.

Checks an export the way TensorFlow Serving would use it, without the
server or the `tensorflow-serving-api` package: this file imports only the
standard library and TensorFlow (nothing from this repository), so it can
be copied next to an export and run anywhere TensorFlow is installed.

  python serving/tf_serving_replay.py --saved_model=EXPORT/saved_model \
      --output=replay.json [--request=body.json ...] [--no_warmup]

  * Warm-up: every record of `saved_model/assets.extra/
    tf_serving_warmup_requests` (a TFRecord file of serialized
    `tensorflow.serving.PredictionLog` protos, as TF Serving reads at load
    time) is decoded and run through its signature.
  * Each --request is a REST predict body, as POSTed to
    `/v1/models/NAME:predict`: `{"signature_name": ..., "instances": [...]}`
    (row format) or `{"signature_name": ..., "inputs": ...}` (columnar);
    `{"b64": "..."}` objects become bytes. Its response is formatted as TF
    Serving's REST API does: `{"predictions": [{output: value, ...} per
    instance]}` or `{"outputs": {output: value, ...}}` (a signature with a
    single output gives the value itself); errors are `{"error": "..."}`
    with status 400.

The --output JSON: {"warmup": [{"model_name", "signature_name", "inputs":
{name: {"dtype", "shape"}}, "outputs": {name: nested lists}} or with
"error"], "rest": [{"request": path, "status": 200 or 400, "response":
{...}}]}. Exit status 1 when a warm-up request fails (TF Serving would not
load the model), 0 otherwise.

The warm-up records are protobuf messages of TF Serving's API, encoded and
decoded here by hand (`encode_prediction_log`, `decode_prediction_log`);
the tensors inside are TensorFlow's own `TensorProto`.
"""

import argparse
import base64
import binascii
import json
import os
import sys
from typing import Any, Dict, Iterator, List, Mapping, Tuple

import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

# Where TF Serving looks for warm-up requests, inside the SavedModel.
WARMUP_FILE = os.path.join('assets.extra', 'tf_serving_warmup_requests')
# TF Serving refuses a warm-up file of more records
# (tensorflow_serving/servables/tensorflow/saved_model_warmup.h,
# WarmupConsts::kMaxNumRecords).
MAX_WARMUP_RECORDS = 1000

# Field numbers of the messages of TF Serving's API (package
# tensorflow.serving), from tensorflow/serving:
#   tensorflow_serving/apis/prediction_log.proto
#     message PredictionLog { ... oneof log_type { ...
#                             PredictLog predict_log = 6; ... } }
#     message PredictLog { PredictRequest request = 1;
#                          PredictResponse response = 2; }
#   tensorflow_serving/apis/predict.proto
#     message PredictRequest { ModelSpec model_spec = 1;
#                              map<string, TensorProto> inputs = 2; ... }
#   tensorflow_serving/apis/model.proto
#     message ModelSpec { string name = 1;
#                         google.protobuf.Int64Value version = 2;
#                         string signature_name = 3; }
# A map field is a repeated message of entries {key = 1; value = 2;}.
PREDICTION_LOG_PREDICT_LOG = 6
PREDICT_LOG_REQUEST = 1
PREDICT_REQUEST_MODEL_SPEC = 1
PREDICT_REQUEST_INPUTS = 2
MAP_ENTRY_KEY = 1
MAP_ENTRY_VALUE = 2
MODEL_SPEC_NAME = 1
MODEL_SPEC_SIGNATURE_NAME = 3

# Protobuf wire types.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


# ------------------------------------------------------ protobuf wire format
def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte = value & 0x7f
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field (string, bytes or message)."""
  return (_varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload))
          + payload)


def encode_prediction_log(model_name: str, signature_name: str,
                          inputs: Mapping[str, Any]) -> bytes:
  """A serialized PredictionLog{predict_log{request{model_spec, inputs}}}.

  Fields are written in field-number order and map entries sorted by key,
  as protobuf serializes them (deterministic output); empty strings are
  left out (proto3 defaults).

  Args:
    model_name: ModelSpec.name.
    signature_name: ModelSpec.signature_name.
    inputs: {input name: TensorProto}.

  Returns:
    The serialized PredictionLog.
  """
  spec = b''
  if model_name:
    spec += _field(MODEL_SPEC_NAME, model_name.encode('utf-8'))
  if signature_name:
    spec += _field(MODEL_SPEC_SIGNATURE_NAME, signature_name.encode('utf-8'))
  request = _field(PREDICT_REQUEST_MODEL_SPEC, spec)
  for name in sorted(inputs):
    entry = (_field(MAP_ENTRY_KEY, name.encode('utf-8'))
             + _field(MAP_ENTRY_VALUE, inputs[name].SerializeToString()))
    request += _field(PREDICT_REQUEST_INPUTS, entry)
  return _field(PREDICTION_LOG_PREDICT_LOG,
                _field(PREDICT_LOG_REQUEST, request))


def _read_varint(data: bytes, pos: int) -> Tuple[int, int]:
  value, shift = 0, 0
  while True:
    if pos >= len(data):
      raise ValueError('truncated varint')
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7f) << shift
    if not byte & 0x80:
      return value, pos
    shift += 7
    if shift > 63:
      raise ValueError('varint longer than 10 bytes')


def _fields(data: bytes) -> Iterator[Tuple[int, int, Any]]:
  """(field number, wire type, value) of each field of a message."""
  pos = 0
  while pos < len(data):
    key, pos = _read_varint(data, pos)
    number, wire_type = key >> 3, key & 7
    if wire_type == _VARINT:
      value, pos = _read_varint(data, pos)
    elif wire_type == _FIXED64:
      value, pos = data[pos:pos + 8], pos + 8
    elif wire_type == _FIXED32:
      value, pos = data[pos:pos + 4], pos + 4
    elif wire_type == _LENGTH_DELIMITED:
      length, pos = _read_varint(data, pos)
      value, pos = data[pos:pos + length], pos + length
    else:
      raise ValueError(f'field {number}: unsupported wire type {wire_type}')
    if pos > len(data):
      raise ValueError(f'field {number}: truncated')
    yield number, wire_type, value


def _message(data: bytes, number: int) -> bytes:
  """The (merged) sub-message `number` of `data`; b'' when absent.

  A message field given several times is merged, which for its serialized
  forms is concatenation.
  """
  return b''.join(value for n, wire_type, value in _fields(data)
                  if n == number and wire_type == _LENGTH_DELIMITED)


def _string(data: bytes, number: int) -> str:
  """The last value of string field `number` (proto3: last wins)."""
  values = [value for n, wire_type, value in _fields(data)
            if n == number and wire_type == _LENGTH_DELIMITED]
  return values[-1].decode('utf-8') if values else ''


def decode_prediction_log(data: bytes) -> Dict[str, Any]:
  """A serialized PredictionLog holding a PredictLog -> its request.

  Args:
    data: one warm-up record.

  Returns:
    {"model_name": str, "signature_name": str,
     "inputs": {input name: tensor_pb2.TensorProto}}.

  Raises:
    ValueError: if the record is not a PredictionLog with a predict_log
      (e.g. a classify_log), or is malformed.
  """
  numbers = {n for n, _, _ in _fields(data)}
  if PREDICTION_LOG_PREDICT_LOG not in numbers:
    raise ValueError(f'not a PredictionLog with a predict_log (field '
                     f'{PREDICTION_LOG_PREDICT_LOG}); fields: '
                     f'{sorted(numbers)}')
  request = _message(_message(data, PREDICTION_LOG_PREDICT_LOG),
                     PREDICT_LOG_REQUEST)
  spec = _message(request, PREDICT_REQUEST_MODEL_SPEC)
  inputs = {}
  for number, wire_type, entry in _fields(request):
    if number != PREDICT_REQUEST_INPUTS or wire_type != _LENGTH_DELIMITED:
      continue
    tensor = tensor_pb2.TensorProto()
    tensor.ParseFromString(_message(entry, MAP_ENTRY_VALUE))
    inputs[_string(entry, MAP_ENTRY_KEY)] = tensor  # Map: last wins.
  return {'model_name': _string(spec, MODEL_SPEC_NAME),
          'signature_name': _string(spec, MODEL_SPEC_SIGNATURE_NAME),
          'inputs': inputs}


def read_warmup_file(path: str) -> List[Dict[str, Any]]:
  """Decoded records (`decode_prediction_log`) of a warm-up file."""
  records = []
  for index, record in enumerate(tf.data.TFRecordDataset(path)):
    try:
      records.append(decode_prediction_log(record.numpy()))
    except ValueError as e:
      raise ValueError(f'{path} record {index}: {e}') from e
  return records


# ------------------------------------------------------------- running
def _tensor_summary(tensor: tf.Tensor) -> Dict[str, Any]:
  return {'dtype': tensor.dtype.name, 'shape': tensor.shape.as_list()}


def _json_value(value: Any) -> Any:
  """bytes in a tensor's .tolist() value -> {"b64": ...}, as TF Serving."""
  if isinstance(value, list):
    return [_json_value(v) for v in value]
  if isinstance(value, bytes):
    return {'b64': base64.b64encode(value).decode('ascii')}
  return value


def _tensor_json(tensor: tf.Tensor) -> Any:
  """A tensor as TF Serving's JSON gives it: nested lists of its values.

  float32 values are written as the doubles they equal (e.g.
  0.30000001192092896; TF Serving prints fewer digits, which read back to
  the same float32).
  """
  value = tensor.numpy().tolist()
  return _json_value(value) if tensor.dtype == tf.string else value


def replay_warmup(saved_model_dir: str, loaded=None) -> List[Dict[str, Any]]:
  """Runs every warm-up request of the SavedModel through its signature.

  Returns:
    Per record: model_name, signature_name, inputs (dtype and shape of
    each), and outputs (JSON values) or error (the message).
  """
  loaded = loaded or tf.saved_model.load(saved_model_dir)
  results = []
  for record in read_warmup_file(os.path.join(saved_model_dir, WARMUP_FILE)):
    inputs = {name: tf.constant(tf.make_ndarray(proto))
              for name, proto in record['inputs'].items()}
    result = {'model_name': record['model_name'],
              'signature_name': record['signature_name'],
              'inputs': {k: _tensor_summary(v) for k, v in inputs.items()}}
    try:
      outputs = _signature(loaded, record['signature_name'])(**inputs)
      result['outputs'] = {k: _tensor_json(v) for k, v in outputs.items()}
    except (ValueError, TypeError, tf.errors.OpError) as e:
      result['error'] = _message_of(e)
    results.append(result)
  return results


class RestError(ValueError):
  """A request TF Serving would answer with 400 {"error": message}."""


def _message_of(error: Exception) -> str:
  return getattr(error, 'message', None) or str(error)


def _signature(loaded, name: str):
  name = name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
  if name not in loaded.signatures:
    raise RestError(f'Serving signature name: "{name}" not found in '
                    f'signature def; the model has '
                    f'{", ".join(sorted(loaded.signatures))}.')
  return loaded.signatures[name]


def _is_b64(value: Any) -> bool:
  return isinstance(value, dict) and list(value) == ['b64']


def _decode_b64(value: Any, where: str) -> Any:
  """JSON value -> the same with {"b64": s} objects as bytes."""
  if isinstance(value, list):
    return [_decode_b64(v, f'{where}[{i}]') for i, v in enumerate(value)]
  if _is_b64(value):
    if not isinstance(value['b64'], str):
      raise RestError(f'{where}: "b64" must hold a string.')
    try:
      return base64.b64decode(value['b64'], validate=True)
    except (binascii.Error, ValueError) as e:
      raise RestError(f'{where}: Unable to base64 decode the "b64" '
                      f'string ({e}).') from e
  if isinstance(value, dict):
    raise RestError(f'{where}: an object other than {{"b64": ...}} where '
                    'a value is expected.')
  return value


def _to_tensor(value: Any, spec: tf.TensorSpec, where: str) -> tf.Tensor:
  value = _decode_b64(value, where)
  try:
    if spec.dtype == tf.string:
      value = _utf8(value)
    tensor = tf.constant(value, dtype=spec.dtype)
  except (ValueError, TypeError) as e:
    raise RestError(f'{where}: not a {spec.dtype.name} tensor: {e}') from e
  if not spec.shape.is_compatible_with(tensor.shape):
    raise RestError(f'{where}: shape {tensor.shape.as_list()} does not '
                    f'match the signature input {spec.name or ""} '
                    f'{spec.shape}.')
  return tensor


def _utf8(value: Any) -> Any:
  if isinstance(value, list):
    return [_utf8(v) for v in value]
  return value.encode('utf-8') if isinstance(value, str) else value


def rest_predict(loaded, body: Mapping[str, Any]) -> Dict[str, Any]:
  """A REST predict body -> the response body TF Serving would return.

  Args:
    loaded: the `tf.saved_model.load` result.
    body: the parsed JSON body (see the module doc).

  Returns:
    {"predictions": [...]} for "instances", {"outputs": ...} for "inputs".

  Raises:
    RestError: on a request TF Serving would refuse, or a failing model
      (400 with {"error": message}).
  """
  if not isinstance(body, dict):
    raise RestError('The request body must be a JSON object.')
  if ('instances' in body) == ('inputs' in body):
    raise RestError('The request must have exactly one of "instances" '
                    '(row format) or "inputs" (columnar format).')
  function = _signature(loaded, body.get('signature_name', ''))
  specs = function.structured_input_signature[1]
  if 'instances' in body:
    instances = body['instances']
    if not isinstance(instances, list) or not instances:
      raise RestError('"instances" must be a non-empty list.')
    columns = {name: [] for name in specs}
    for i, instance in enumerate(instances):
      if isinstance(instance, dict) and not _is_b64(instance):
        if set(instance) != set(specs):
          raise RestError(f'instances[{i}] has inputs {sorted(instance)}; '
                          f'the signature takes {sorted(specs)}.')
        for name in specs:
          columns[name].append(instance[name])
      elif len(specs) == 1:
        columns[next(iter(specs))].append(instance)
      else:
        raise RestError(f'instances[{i}]: the signature takes several '
                        f'inputs ({sorted(specs)}); give an object.')
    inputs = {name: _to_tensor(column, specs[name], 'instances')
              for name, column in columns.items()}
  else:
    given = body['inputs']
    if isinstance(given, dict) and not _is_b64(given):
      if set(given) != set(specs):
        raise RestError(f'"inputs" has {sorted(given)}; the signature '
                        f'takes {sorted(specs)}.')
    elif len(specs) == 1:
      given = {next(iter(specs)): given}
    else:
      raise RestError(f'The signature takes several inputs '
                      f'({sorted(specs)}); give "inputs" as an object.')
    inputs = {name: _to_tensor(given[name], specs[name], f'inputs[{name}]')
              for name in specs}
  try:
    outputs = function(**inputs)
  except tf.errors.OpError as e:
    raise RestError(e.message) from e
  values = {name: _tensor_json(tensor) for name, tensor in outputs.items()}
  if 'inputs' in body:
    return {'outputs': (next(iter(values.values())) if len(values) == 1
                        else values)}
  batch = {name: tensor.shape[0] if tensor.shape.rank else None
           for name, tensor in outputs.items()}
  if len(set(batch.values())) != 1 or None in batch.values():
    raise RestError(f'Outputs of different batch sizes {batch}: the row '
                    'format ("instances") cannot return them; use "inputs".')
  size = next(iter(batch.values()))
  if len(values) == 1:
    return {'predictions': next(iter(values.values()))}
  return {'predictions': [{name: value[i] for name, value in values.items()}
                          for i in range(size)]}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--saved_model', required=True,
                      help='The SavedModel directory (EXPORT/saved_model).')
  parser.add_argument('--output', required=True, help='The JSON to write.')
  parser.add_argument('--request', action='append', default=[],
                      help='A REST predict body (JSON file); repeatable.')
  parser.add_argument('--no_warmup', action='store_true',
                      help='Do not replay the warm-up requests.')
  args = parser.parse_args(argv)
  loaded = tf.saved_model.load(args.saved_model)
  result = {'warmup': [], 'rest': []}
  if not args.no_warmup:
    path = os.path.join(args.saved_model, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
      print(f'{path} does not exist: no warm-up requests.', file=sys.stderr)
    else:
      result['warmup'] = replay_warmup(args.saved_model, loaded)
  for path in args.request:
    try:
      with open(path, encoding='utf-8') as f:
        body = json.load(f)
      response, status = rest_predict(loaded, body), 200
    except json.JSONDecodeError as e:
      response, status = {'error': f'{path}: not JSON: {e}'}, 400
    except RestError as e:
      response, status = {'error': str(e)}, 400
    result['rest'].append({'request': path, 'status': status,
                           'response': response})
  with open(args.output, 'w', encoding='utf-8') as f:
    json.dump(result, f)
  failed = [r['signature_name'] for r in result['warmup'] if 'error' in r]
  for r in result['warmup']:
    if 'error' in r:
      print(f'warm-up request of {r["signature_name"]} failed: '
            f'{r["error"]}', file=sys.stderr)
  print(f'{len(result["warmup"])} warm-up requests replayed '
        f'({len(failed)} failed), {len(result["rest"])} REST requests; '
        f'results in {args.output}')
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
