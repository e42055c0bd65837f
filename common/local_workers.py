r"""Starts N local worker processes of a TF program, each with its TF_CONFIG.

For MultiWorkerMirroredStrategy on one machine (trying out or testing a
multi-worker setup); on several machines, start one worker per host with
its own TF_CONFIG (see the README).

  python -m common.local_workers --num_workers=2 -- train.py \
      --experiment=unipercepnet_shapes --mode=train --model_dir=RUN \
      --params_override=runtime.distribution_strategy=multi_worker_mirrored

Worker i runs `python ARGS...` with TF_CONFIG {"cluster": {"worker":
["127.0.0.1:P0", ...]}, "task": {"type": "worker", "index": i}} (free ports
picked here); worker 0 is the chief. Their output (stdout and stderr) is
streamed, each line prefixed `[worker i] `. The exit code is 0 when every
worker exits with 0, otherwise that of the first to fail; the workers still
running --grace_seconds after a failure are killed.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, TextIO


def free_ports(count: int) -> List[int]:
  """`count` distinct ports free on 127.0.0.1 now (the OS's choice).

  The sockets are closed before the workers bind them, so another program
  could take one in between: a worker then fails to start its server.
  """
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind(('127.0.0.1', 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_config(ports: Sequence[int], index: int) -> str:
  """TF_CONFIG of worker `index` of a cluster on 127.0.0.1:`ports`."""
  return json.dumps({
      'cluster': {'worker': [f'127.0.0.1:{port}' for port in ports]},
      'task': {'type': 'worker', 'index': index}})


class Workers:
  """N worker processes of `python ARGS...` on 127.0.0.1.

  Their output lines are kept (see `log`) and, with `out`, also written
  there prefixed `[worker i] `. `env` replaces the environment (each
  worker's TF_CONFIG is added).
  """

  def __init__(self, args: Sequence[str], num_workers: int = 2,
               env: Optional[Dict[str, str]] = None,
               out: Optional[TextIO] = None,
               cwd: Optional[str] = None):
    self.ports = free_ports(num_workers)
    self.logs: List[List[str]] = [[] for _ in range(num_workers)]
    self._out = out
    self._lock = threading.Lock()
    self.processes: List[subprocess.Popen] = []
    self._readers = []
    for i in range(num_workers):
      worker_env = dict(os.environ if env is None else env,
                        TF_CONFIG=tf_config(self.ports, i),
                        PYTHONUNBUFFERED='1')
      process = subprocess.Popen(
          [sys.executable, *args], env=worker_env, cwd=cwd,
          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True, errors='replace')
      self.processes.append(process)
      reader = threading.Thread(target=self._read, args=(i,), daemon=True)
      reader.start()
      self._readers.append(reader)

  def _read(self, index: int) -> None:
    for line in self.processes[index].stdout:
      with self._lock:
        self.logs[index].append(line)
        if self._out is not None:
          self._out.write(f'[worker {index}] {line}')
          self._out.flush()

  def log(self, index: int) -> str:
    """Worker `index`'s output so far."""
    with self._lock:
      return ''.join(self.logs[index])

  def wait_for(self, index: int, text: str, timeout: float) -> bool:
    """Waits until worker `index` printed `text`; False if it exited or the
    time ran out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if text in self.log(index):
        return True
      if self.processes[index].poll() is not None:
        self._readers[index].join(timeout=5)
        return text in self.log(index)
      time.sleep(0.5)
    return False

  def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
    """Sends `sig` to worker `index` if it runs."""
    if self.processes[index].poll() is None:
      self.processes[index].send_signal(sig)

  def wait(self, grace_seconds: Optional[float] = None,
           timeout: Optional[float] = None) -> List[int]:
    """Waits for every worker; returns their exit codes.

    Args:
      grace_seconds: once one worker failed, kill the others still running
        this long after; None: wait for them.
      timeout: kill every worker still running after this long; None: no
        limit.

    Returns:
      The exit codes (negative: killed by that signal).
    """
    start = time.monotonic()
    failed_at = None
    while any(p.poll() is None for p in self.processes):
      now = time.monotonic()
      if failed_at is None and any(p.poll() not in (None, 0)
                                   for p in self.processes):
        failed_at = now
      if ((timeout is not None and now - start > timeout) or
          (failed_at is not None and grace_seconds is not None and
           now - failed_at > grace_seconds)):
        for i in range(len(self.processes)):
          self.kill(i)
      time.sleep(0.2)
    for reader in self._readers:
      reader.join(timeout=5)
    return [p.returncode for p in self.processes]

  def close(self) -> None:
    """Kills the workers still running."""
    for i in range(len(self.processes)):
      self.kill(i)
    self.wait()


def first_failure(codes: Sequence[int]) -> int:
  """The first non-zero exit code (a signal's as 128 + its number); 0."""
  for code in codes:
    if code:
      return 128 - code if code < 0 else code
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      usage='%(prog)s [--num_workers=N] [--grace_seconds=S] -- PROGRAM ARGS')
  parser.add_argument('--num_workers', type=int, default=2)
  parser.add_argument('--grace_seconds', type=float, default=300.,
                      help='once a worker failed, kill the others still '
                      'running this long after')
  parser.add_argument('program', nargs=argparse.REMAINDER,
                      help='a Python script and its arguments')
  flags = parser.parse_args(argv)
  program = flags.program[1:] if flags.program[:1] == ['--'] else flags.program
  if not program or flags.num_workers < 1:
    parser.error('give --num_workers >= 1 and a program after --')
  workers = Workers(program, flags.num_workers, out=sys.stdout)
  for i, process in enumerate(workers.processes):
    print(f'[local_workers] worker {i}: pid {process.pid}, TF_CONFIG='
          f'{tf_config(workers.ports, i)}', flush=True)
  try:
    codes = workers.wait(grace_seconds=flags.grace_seconds)
  except KeyboardInterrupt:
    workers.close()
    raise
  for i, code in enumerate(codes):
    print(f'[local_workers] worker {i} exited with {code}', flush=True)
  return first_failure(codes)


if __name__ == '__main__':
  sys.exit(main())
