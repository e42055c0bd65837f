"""Batched random sampling of assigned anchors (mmdet's RandomSampler).

mmdet's `RandomSampler(num, pos_fraction, neg_pos_ub=-1,
add_gt_as_proposals=False)` picks, per image, at most `num * pos_fraction`
positives at random (all of them when there are fewer), then
`num - n_pos_sampled` negatives at random (all of them when there are fewer).
Ignored anchors are neither. Only sampled anchors get a classification
weight.

Model Garden's `BalancedPositiveNegativeSampler` works one image at a time,
and its static-shape mode fills a short sample with anchors outside the
indicator (here: ignored anchors) and gathers through `[N, N]` one-hot
matmuls; so this module draws one random key per anchor and keeps, per image
and kind, the anchors of the largest keys. Every op is batched with static
shapes (two sorts over `[B, N]`), eager, `tf.function` and XLA alike.
"""

from typing import Dict, Optional

import tensorflow as tf


def _random_ranks(eligible: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
  """Rank of each eligible entry in a random order (0 first), per row.

  Args:
    eligible: `[B, N]` bool.
    keys: `[B, N]` random keys in [0, 1).

  Returns:
    `[B, N]` int32: eligible entries take the ranks 0..n-1 (n eligible in the
    row) in decreasing key order; the others take n..N-1.
  """
  scores = tf.where(eligible, keys, -1.)
  order = tf.argsort(scores, axis=-1, direction='DESCENDING', stable=True)
  return tf.argsort(order, axis=-1, stable=True)  # The inverse permutation.


def sample_anchors(assigned_gt_inds: tf.Tensor,
                   num_samples: int = 256,
                   positive_fraction: float = 0.5,
                   seed: Optional[int] = None) -> Dict[str, tf.Tensor]:
  """Samples positive and negative anchors per image.

  Args:
    assigned_gt_inds: `[B, N]` int, mmdet's convention: 0 negative, >= 1
      positive, -1 ignored.
    num_samples: anchors sampled per image (mmdet's `num`); 0 or less: every
      positive and every negative is kept (mmdet's PseudoSampler).
    positive_fraction: at most `int(num_samples * positive_fraction)`
      positives are kept.
    seed: optional op seed of the random keys.

  Returns:
    Dict with 'positive' and 'negative', `[B, N]` bool: the sampled anchors
    of each kind.
  """
  with tf.name_scope('sample_anchors'):
    assigned_gt_inds = tf.convert_to_tensor(assigned_gt_inds)
    positive = assigned_gt_inds > 0
    negative = tf.equal(assigned_gt_inds, 0)
    if num_samples <= 0:
      return {'positive': positive, 'negative': negative}
    max_positives = int(num_samples * positive_fraction)
    keys = tf.random.uniform(tf.shape(assigned_gt_inds), seed=seed)
    positive &= _random_ranks(positive, keys) < max_positives
    num_negatives = num_samples - tf.reduce_sum(
        tf.cast(positive, tf.int32), axis=-1, keepdims=True)
    negative &= _random_ranks(negative, keys) < num_negatives
    return {'positive': positive, 'negative': negative}
