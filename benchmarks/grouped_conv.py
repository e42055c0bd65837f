r"""Ways to run RegNetX's grouped 3x3 convolutions on this machine.

  python benchmarks/grouped_conv.py [--size=640x640] [--runs=10] [--grad]

For each stage of RegNetX-4.0GF (group width 40) at the given input size,
times one grouped 3x3 conv (stride 1, the stage's resolution) computed as:

- split: one `tf.nn.conv2d` per group and a concat (GroupedConv2D on CPU);
- native: one `tf.nn.conv2d` with the grouped filter `[3, 3, C/G, C]`;
- native+xla: the same, compiled with XLA (what tf_keras does on CPU);
- dense: a block-diagonal `[3, 3, C, C]` filter (G times the MACs);
- im2col: patches, then one batched matmul over the groups.

With `--grad` the forward and backward passes are timed (training).
"""


from absl import app
from absl import flags

import numpy as np
import tensorflow as tf

from benchmarks import bench_lib

_SIZE = flags.DEFINE_string('size', '640x640', 'Network input HEIGHTxWIDTH.')
_RUNS = flags.DEFINE_integer('runs', 10, 'Timed runs.')
_GRAD = flags.DEFINE_bool('grad', False, 'Time forward + backward.')
_METHODS = flags.DEFINE_list(
    'methods', ['split', 'native', 'native+xla', 'dense', 'im2col'],
    'Methods to time.')

# RegNetX-4.0GF: (channels, groups, stride of the stage's output).
STAGES = ((80, 2, 4), (240, 6, 8), (560, 14, 16), (1360, 34, 32))


def split_conv(x, kernel, groups):
  xs = tf.split(x, groups, axis=-1)
  ks = tf.split(kernel, groups, axis=-1)
  return tf.concat([tf.nn.conv2d(a, k, 1, 'SAME') for a, k in zip(xs, ks)],
                   axis=-1)


def native_conv(x, kernel, groups):
  del groups
  return tf.nn.conv2d(x, kernel, 1, 'SAME')


def block_diagonal(kernel, groups):
  """[3, 3, C/G, C] grouped filter -> [3, 3, C, C] block-diagonal one."""
  kh, kw, cin, cout = kernel.shape
  cg = cout // groups
  k = tf.reshape(kernel, [kh, kw, cin, groups, cg])
  eye = tf.eye(groups, dtype=kernel.dtype)
  # [kh, kw, G_in, cin, G_out, cg]
  dense = k[:, :, None, :, :, :] * eye[None, None, :, None, :, None]
  return tf.reshape(dense, [kh, kw, groups * cin, cout])


def dense_conv(x, kernel, groups):
  return tf.nn.conv2d(x, block_diagonal(kernel, groups), 1, 'SAME')


def im2col_conv(x, kernel, groups):
  batch, height, width, channels = x.shape
  cg = channels // groups
  patches = tf.image.extract_patches(x, [1, 3, 3, 1], [1, 1, 1, 1],
                                     [1, 1, 1, 1], 'SAME')
  # [N, 9, G, cg] -> [G, N, 9 * cg]
  patches = tf.reshape(patches, [-1, 9, groups, cg])
  patches = tf.reshape(tf.transpose(patches, [2, 0, 1, 3]),
                       [groups, -1, 9 * cg])
  k = tf.reshape(kernel, [9, cg, groups, cg])
  k = tf.reshape(tf.transpose(k, [2, 0, 1, 3]), [groups, 9 * cg, cg])
  out = tf.matmul(patches, k)  # [G, N, cg]
  out = tf.transpose(out, [1, 0, 2])
  return tf.reshape(out, [batch, height, width, channels])


METHODS = {
    'split': (split_conv, False),
    'native': (native_conv, False),
    'native+xla': (native_conv, True),
    'dense': (dense_conv, False),
    'im2col': (im2col_conv, False),
}


def make_fn(method, x, kernel, groups, grad):
  conv, jit = METHODS[method]

  @tf.function(jit_compile=jit or None)
  def run():
    if not grad:
      return tf.reduce_sum(conv(x, kernel, groups))
    with tf.GradientTape() as tape:
      tape.watch([x, kernel])
      loss = tf.reduce_sum(conv(x, kernel, groups) ** 2)
    return tape.gradient(loss, [x, kernel])

  return run


def main(_):
  height, width = bench_lib.parse_sizes(_SIZE.value)[0]
  rng = np.random.default_rng(0)
  print(f'RegNetX-4.0GF grouped 3x3 convs at {height}x{width} input, batch 1'
        f'{", forward + backward" if _GRAD.value else ""}; median ms of '
        f'{_RUNS.value} interleaved runs')
  print(f'{"stage":24s} ' + ' '.join(f'{m:>11s}' for m in _METHODS.value))
  for channels, groups, stride in STAGES:
    h, w = height // stride, width // stride
    x = tf.constant(rng.standard_normal([1, h, w, channels]), tf.float32)
    kernel = tf.constant(
        rng.standard_normal([3, 3, channels // groups, channels]) * 0.05,
        tf.float32)
    reference = split_conv(x, kernel, groups)
    fns, notes = {}, {}
    for method in _METHODS.value:
      fn = make_fn(method, x, kernel, groups, _GRAD.value)
      try:
        fn()
        if not _GRAD.value:
          out = METHODS[method][0](x, kernel, groups)
          notes[method] = float(tf.reduce_max(tf.abs(out - reference)))
        fns[method] = fn
      except Exception as e:  # pylint: disable=broad-except
        notes[method] = str(e).splitlines()[0][:60]
    times = bench_lib.interleaved_times(fns, _RUNS.value)
    cells = []
    for method in _METHODS.value:
      if method in times:
        cells.append(f'{1e3 * np.median(times[method]):11.2f}')
      else:
        cells.append(f'{"failed":>11s}')
    print(f'{f"C={channels} G={groups} {h}x{w}":24s} ' + ' '.join(cells))
    for method, note in notes.items():
      if isinstance(note, str):
        print(f'  {method}: {note}')


if __name__ == '__main__':
  app.run(main)
