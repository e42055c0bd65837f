r"""Turns train.py's output into progress lines with an ETA (for the demo).

  python train.py ... | python scripts/progress.py

Reads Model Garden's `train | step: N | steps/sec: S | output: {...}` lines
and the `Training to step T` line train.py prints, and writes

  train   300/2000 [###.................]  15%  loss 1.346  2.4 steps/s  ETA 11 min 48 s

(the rate and ETA from the wall time since the first step, so evaluation
and checkpoint pauses count). Evaluation summaries pass through as they
are; other lines are dropped.
"""

import re
import sys
import time

_TOTAL = re.compile(r'^Training to step (\d+)')
_STEP = re.compile(r'^train \| step:\s*(\d+)')
_LOSS = re.compile(r"'total_loss': (?:np\.float32\()?([-0-9.e]+)")
_KEEP = re.compile(r'^(Evaluation|  (box|mask|panoptic) |All metrics)')
_WIDTH = 20


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  return f'{seconds // 60} min {seconds % 60:02d} s'


def main() -> None:
  total = start = start_step = step = None
  for line in sys.stdin:
    if match := _TOTAL.match(line):
      total = int(match.group(1))
    elif match := _STEP.match(line):
      step = int(match.group(1))
      if start is None:
        start, start_step = time.time(), step
      continue  # Printed with the loss, which follows on the next line.
    elif step is not None and (match := _LOSS.search(line)):
      now = time.time()
      rate = (step - start_step) / (now - start) if now > start else 0.
      text = f'train {step:6d}'
      if total:
        done = min(step / total, 1.)
        bar = '#' * int(done * _WIDTH)
        text += f'/{total} [{bar:.<{_WIDTH}}] {done:4.0%}'
      text += f'  loss {float(match.group(1)):.3f}'
      if rate > 0:
        text += f'  {rate:.1f} steps/s'
        if total:
          text += f'  ETA {_duration((total - step) / rate)}'
      print(text, flush=True)
      step = None
    elif _KEEP.match(line):
      print(line, end='', flush=True)


if __name__ == '__main__':
  main()
