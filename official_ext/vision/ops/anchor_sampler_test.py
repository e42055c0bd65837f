"""Tests for official_ext.vision.ops.anchor_sampler."""

import numpy as np
import tensorflow as tf

from official_ext.vision.ops import anchor_sampler


def _assignment(rng, batch, n, num_pos, num_ignored):
  """`[batch, n]` assignments with the given counts per image (shuffled)."""
  rows = []
  for p, i in zip(num_pos, num_ignored):
    row = np.zeros(n, np.int32)
    row[:p] = rng.integers(1, 4, p)
    row[p:p + i] = -1
    rows.append(rng.permutation(row))
  return np.stack(rows)


class SampleAnchorsTest(tf.test.TestCase):

  def _check(self, assigned, num_samples=256, positive_fraction=0.5,
             seed=None):
    out = anchor_sampler.sample_anchors(assigned, num_samples,
                                        positive_fraction, seed=seed)
    pos, neg = out['positive'].numpy(), out['negative'].numpy()
    self.assertFalse(np.any(pos & neg))
    self.assertTrue(np.all(assigned[pos] >= 1))
    self.assertTrue(np.all(assigned[neg] == 0))
    return pos, neg

  def test_counts_as_mmdet_random_sampler(self):
    rng = np.random.default_rng(0)
    # Positives: fewer than 128, exactly 128, more; negatives: plenty, and
    # fewer than asked for.
    assigned = _assignment(rng, 4, 2000, [11, 128, 300, 20],
                           [7, 0, 40, 1800])
    pos, neg = self._check(assigned)
    self.assertAllEqual(pos.sum(1), [11, 128, 128, 20])
    self.assertAllEqual(neg.sum(1), [245, 128, 128, 180])
    # Every positive kept when there are few.
    self.assertAllEqual(pos[0], assigned[0] >= 1)
    self.assertAllEqual(neg[3], assigned[3] == 0)

  def test_positive_fraction_and_num_samples(self):
    rng = np.random.default_rng(1)
    assigned = _assignment(rng, 2, 500, [50, 5], [0, 0])
    pos, neg = self._check(assigned, num_samples=64, positive_fraction=0.25)
    self.assertAllEqual(pos.sum(1), [16, 5])
    self.assertAllEqual(neg.sum(1), [48, 59])

  def test_pseudo_sampler_keeps_every_non_ignored_anchor(self):
    rng = np.random.default_rng(2)
    assigned = _assignment(rng, 2, 300, [200, 3], [10, 0])
    pos, neg = self._check(assigned, num_samples=0)
    self.assertAllEqual(pos, assigned >= 1)
    self.assertAllEqual(neg, assigned == 0)

  def test_sample_is_uniform_and_seeded(self):
    assigned = np.zeros((1, 40), np.int32)
    assigned[0, :10] = 1
    counts = np.zeros(40)
    for _ in range(400):
      pos, neg = self._check(assigned, num_samples=8)
      counts += pos[0] + neg[0]
    # 4 of 10 positives and 4 of 30 negatives per draw.
    self.assertAllClose(counts[:10] / 400, np.full(10, 0.4), atol=0.12)
    self.assertAllClose(counts[10:] / 400, np.full(30, 4 / 30), atol=0.07)
    tf.random.set_seed(7)
    b = anchor_sampler.sample_anchors(assigned, 8, seed=3)
    tf.random.set_seed(7)
    c = anchor_sampler.sample_anchors(assigned, 8, seed=3)
    self.assertAllEqual(b['positive'], c['positive'])
    self.assertAllEqual(b['negative'], c['negative'])

  def test_xla_static_shapes(self):
    rng = np.random.default_rng(3)
    assigned = _assignment(rng, 3, 700, [150, 0, 12], [30, 600, 5])

    @tf.function(jit_compile=True)
    def sample(x):
      out = anchor_sampler.sample_anchors(x, 256, 0.5)
      return out['positive'], out['negative']

    pos, neg = [t.numpy() for t in sample(tf.constant(assigned))]
    self.assertEqual(pos.shape, (3, 700))
    self.assertAllEqual(pos.sum(1), [128, 0, 12])
    self.assertAllEqual(neg.sum(1), [128, 100, 244])
    self.assertTrue(np.all(assigned[pos] >= 1))
    self.assertTrue(np.all(assigned[neg] == 0))


if __name__ == '__main__':
  tf.test.main()
