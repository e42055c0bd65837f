"""Tests for scripts/progress.py: train.py's output as progress lines."""

import os
import subprocess
import sys

_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       'progress.py')


def test_steps_become_progress_with_eta_and_evaluation_passes_through():
  lines = [
      'Training to step 200: 16 epochs of 125 steps.',
      'train | step:     50 | steps/sec:    2.2 | output: ',
      "    {'total_loss': np.float32(2.9274874),",
      'I1201 noise from logging',
      'train | step:    100 | steps/sec:    2.2 | output: ',
      "     'total_loss': np.float32(1.5),",
      'Evaluation at step 200 (COCO AP is AP@[.5:.95]):',
      '  box   AP 0.649  AP50 0.801',
      '  panoptic  PQ 0.773  SQ 0.917  RQ 0.839',
  ]
  out = subprocess.run([sys.executable, _SCRIPT], input='\n'.join(lines),
                       capture_output=True, text=True, check=True).stdout
  out = out.splitlines()
  assert out[0].startswith('train     50/200 [#####...............]  25%')
  assert out[0].endswith('loss 2.927')  # No rate yet: one point.
  assert out[1].startswith('train    100/200 [##########..........]  50%'
                           '  loss 1.500  ')
  assert 'steps/s  ETA ' in out[1]
  assert out[2:] == lines[6:]
