"""train.py with several workers (multi_worker_mirrored, TF_CONFIG).

The end-to-end test starts two train.py workers on 127.0.0.1 with
common/local_workers.py; the others check train.py's pieces without a
cluster.
"""

import json
import os
import re
import time

import pytest
import tensorflow as tf

from official.core import exp_factory
from common import local_workers
from data import shapes_dataset
import train

_ROOT = os.path.dirname(os.path.abspath(__file__))


def _set_tf_config(monkeypatch, cluster, task_type, index):
  monkeypatch.setenv('TF_CONFIG', json.dumps(
      {'cluster': cluster, 'task': {'type': task_type, 'index': index}}))


def test_the_chief_is_worker_0_or_the_chief_task(monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  assert train._cluster() is None and train._is_chief(None)
  # A cluster of one task is no cluster.
  _set_tf_config(monkeypatch, {'worker': ['a:1']}, 'worker', 0)
  assert train._cluster() is None
  workers = {'worker': ['a:1', 'b:2']}
  _set_tf_config(monkeypatch, workers, 'worker', 0)
  assert train._is_chief(train._cluster())
  _set_tf_config(monkeypatch, workers, 'worker', 1)
  assert not train._is_chief(train._cluster())
  with_chief = {'chief': ['c:3'], 'worker': ['a:1', 'b:2']}
  _set_tf_config(monkeypatch, with_chief, 'chief', 0)
  assert train._is_chief(train._cluster())
  _set_tf_config(monkeypatch, with_chief, 'worker', 0)
  assert not train._is_chief(train._cluster())


def test_a_cluster_needs_multi_worker_mirrored(monkeypatch):
  _set_tf_config(monkeypatch, {'worker': ['a:1', 'b:2']}, 'worker', 1)
  cluster = train._cluster()
  params = exp_factory.get_exp_config('unipercepnet_shapes')
  with pytest.raises(ValueError, match='cluster of 2 tasks, but runtime'):
    train._check_multi_worker(params, 'train', cluster)
  params.runtime.distribution_strategy = 'multi_worker_mirrored'
  train._check_multi_worker(params, 'train_and_eval', cluster)
  with pytest.raises(ValueError, match='continuous_eval runs in one process'):
    train._check_multi_worker(params, 'continuous_eval', cluster)


# The errors train.py's workers got when the other one was killed (kill -9)
# or stopped (kill -STOP) mid-training; shortened.
_OP = ('{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_'
       'device_/job:worker/replica:0/task:%d/device:CPU:0}} Collective ops is '
       'aborted by: ')
_RESTART = ('\nThe error could be from a previous operation. Restart your '
            'program to reset. [Op:CollectiveReduceV2] name: ')
# In the train loop's tf.function:
_KILLED_1 = tf.errors.UnavailableError(None, None, (
    'Graph execution error:\n\nDetected at node AdamWeightDecay/'
    'CollectiveReduceV2 defined at (most recent call last):\n  File '
    '"train.py", line 369, in <module>\n\nCollective ops is aborted by: '
    'recvmsg:Connection reset by peer\nAdditional GRPC error information '
    'from remote target /job:worker/replica:0/task:1 while calling '
    '/tensorflow.WorkerService/RecvBuf:\n:UNKNOWN:Error received from peer  '
    '{grpc_status:14, grpc_message:"recvmsg:Connection reset by peer"}\nThe '
    'error could be from a previous operation. Restart your program to '
    'reset.\n\t [[{{node AdamWeightDecay/CollectiveReduceV2}}]] '
    '[Op:__inference_loop_fn_39202]'))
# Eagerly (while saving a checkpoint):
_STOPPED_1 = tf.errors.UnavailableError(None, None, (
    _OP % 0 + 'Error reported from /job:worker/task:1: The following tasks '
    'are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1'
    '\nThe tasks have crashed. Check the task logs for an earlier error, or '
    'scheduler events (e.g. preemption, eviction) to debug further.' +
    _RESTART))
_STOPPED_0 = tf.errors.DeadlineExceededError(None, None, (
    _OP % 1 + 'Deadline Exceeded\n\nRPC: /tensorflow.CoordinationService/'
    'Heartbeat' + _RESTART))


def test_a_lost_worker_is_named_with_how_to_resume(monkeypatch, tmp_path):
  workers = {'worker': ['127.0.0.1:2000', '127.0.0.1:2001']}
  _set_tf_config(monkeypatch, workers, 'worker', 0)
  chief = train._cluster()
  model_dir = str(tmp_path)
  message = train.explain_lost_worker(_KILLED_1, chief, model_dir)
  assert message == (
      'Training stopped: worker 0 of 2 lost worker 1 (127.0.0.1:2001) '
      '(UnavailableError: Collective ops is aborted by: recvmsg:Connection '
      'reset by peer). A multi-worker run stops when any worker is lost '
      '(killed, crashed or unreachable). Restart all 2 workers with the same '
      'TF_CONFIG cluster and --model_dir: they resume from the start (no '
      'checkpoint yet).')
  tf.train.Checkpoint(v=tf.Variable(1.)).write(str(tmp_path / 'ckpt-4'))
  tf.compat.v1.train.update_checkpoint_state(model_dir, 'ckpt-4')
  message = train.explain_lost_worker(_STOPPED_1, chief, model_dir)
  assert message.startswith('Training stopped: worker 0 of 2 lost worker 1 '
                            '(127.0.0.1:2001) (UnavailableError: ')
  assert message.endswith('resume from the latest checkpoint there (ckpt-4).')
  # Worker 0 hosts the coordination service: when it stops, worker 1's error
  # names only the service.
  _set_tf_config(monkeypatch, workers, 'worker', 1)
  message = train.explain_lost_worker(_STOPPED_0, train._cluster(), model_dir)
  assert message.startswith(
      'Training stopped: worker 1 of 2 lost worker 0 (127.0.0.1:2000), whose '
      'coordination service stopped answering (DeadlineExceededError: '
      'Collective ops is aborted by: Deadline Exceeded). ')
  # Other errors are left as they are.
  timeout = tf.errors.DeadlineExceededError(None, None, 'Reading gs://b/x.')
  assert train.explain_lost_worker(timeout, chief, model_dir) is None


# ------------------------------------------------------- two real workers

# unipercepnet_shapes made small enough for two workers on two busy cores: a
# ResNet-10 of quarter width, no mask branch (which costs a worker another
# 10 s of CPU to trace); about 25 s of CPU per worker to start.
_CONFIG = """
task:
  model:
    input_size: [64, 64, 3]
    include_mask: false
    anchor: {{scales: [1.0, 2.0]}}
    backbone: {{type: resnet, resnet: {{model_id: 10, depth_multiplier: 0.25}}}}
    decoder: {{dilated_encoder: {{num_filters: 16, bottleneck_filters: 8,
                                  dilation_rates: [1]}}}}
    head: {{num_stacked_convs: 1, num_filters: 16, attention_channels: 4,
            branch_channels: 8}}
  annotation_file: {data}/val.json
  steps_per_epoch: 2
  schedule: {{validation_every_epochs: 0, checkpoint_every_epochs: 1}}
  losses:
    assigner_schedule: [{{assigner: uniform}}]
  train_data:
    input_path: {data}/train-*
    global_batch_size: 2
  validation_data:
    input_path: {data}/val-*
    global_batch_size: 2
    num_examples: 2
trainer:
  steps_per_loop: 2
  summary_interval: 2
  optimizer_config: {{warmup: {{linear: {{warmup_steps: 1}}}}}}
runtime: {{distribution_strategy: multi_worker_mirrored}}
"""


def _start(config, model_dir, epochs, temp_dir):
  """Two train.py workers for `epochs` epochs (stage 1 of the input
  pipeline throughout); their temporary files in `temp_dir`."""
  return local_workers.Workers(
      [os.path.join(_ROOT, 'train.py'), '--experiment=unipercepnet_shapes',
       '--mode=train', f'--model_dir={model_dir}', f'--config_file={config}',
       f'--params_override=task.schedule.epochs={epochs},'
       f'task.train_data.parser.stage2_epoch={epochs}'],
      env=dict(os.environ, TMPDIR=temp_dir), out=None, cwd=_ROOT)


def _event_file_pids(directory):
  # Summary files are named events.out.tfevents.TIME.HOST.PID.N.v2.
  return {int(name.split('.')[-3]) for name in os.listdir(directory)}


@pytest.mark.slow
def test_two_workers_stop_when_one_is_killed_and_resume(tmp_path):
  data = str(tmp_path / 'shapes')
  shapes_dataset.generate(data, num_train=8, num_val=2, image_size=64,
                          num_train_shards=1)
  config = tmp_path / 'small.yaml'
  config.write_text(_CONFIG.format(data=data))
  model_dir = str(tmp_path / 'run')
  temp_dir = str(tmp_path / 'tmp')
  os.makedirs(temp_dir)
  chief_pids = []

  # The chief (worker 0) is killed after its first checkpoint: worker 1 stops
  # within seconds (3.6 s measured; the bound is 2 minutes), naming it.
  workers = _start(config, model_dir, epochs=100, temp_dir=temp_dir)
  try:
    chief_pids.append(workers.processes[0].pid)
    assert workers.wait_for(0, f'saved checkpoint to {model_dir}/ckpt-2.',
                            timeout=900), workers.log(0)[-3000:]
    workers.kill(0)
    killed = time.monotonic()
    codes = workers.wait(timeout=120)
    took = time.monotonic() - killed
  finally:
    workers.close()
  log = workers.log(1)
  assert codes == [-9, 1], log[-3000:]
  assert took < 120
  latest = tf.train.latest_checkpoint(model_dir)
  step = int(latest.rsplit('-', 1)[1])
  assert step >= 2
  assert (f'ERROR: Training stopped: worker 1 of 2 lost worker 0 '
          f'(127.0.0.1:{workers.ports[0]})') in log, log[-3000:]
  assert (f'Restart all 2 workers with the same TF_CONFIG cluster and '
          f'--model_dir: they resume from the latest checkpoint there '
          f'(ckpt-{step}).') in log

  # Restarted for one more epoch: both resume from that checkpoint (the
  # Task's input pipeline too: 2 steps to the end of stage 1) and finish.
  workers = _start(config, model_dir, epochs=step // 2 + 1,
                   temp_dir=temp_dir)
  try:
    chief_pids.append(workers.processes[0].pid)
    codes = workers.wait(timeout=900)
  finally:
    workers.close()
  logs = [workers.log(0), workers.log(1)]
  assert codes == [0, 0], logs[0][-2000:] + logs[1][-2000:]
  assert tf.train.latest_checkpoint(model_dir).endswith(f'ckpt-{step + 2}')
  assert f'restored from checkpoint: {model_dir}/ckpt-{step}' in logs[0]
  assert (f"Resuming from the chief's checkpoint {model_dir}/ckpt-{step}."
          in logs[1])
  for log in logs:
    assert 'Input: stage-1 pipeline for 2 steps, then stage 2.' in log
  # Worker 1 checkpointed into its temporary directory, removed since.
  written = re.search(r'saved checkpoint to (\S+)/ckpt-%d\.' % (step + 2),
                      logs[1]).group(1)
  assert os.path.dirname(written) == temp_dir
  assert not os.path.exists(written)
  assert not [name for name in os.listdir(temp_dir)
              if name.startswith('unipercepnet-')]

  # Only the chiefs wrote model_dir: checkpoints, params.yaml, summaries.
  names = set(os.listdir(model_dir))
  checkpoints = {name for name in names if re.fullmatch(
      r'ckpt-\d+\.(index|data-00000-of-00001)', name)}
  assert names - checkpoints == {'checkpoint', 'params.yaml', 'train'}
  with open(os.path.join(model_dir, 'params.yaml')) as f:
    assert f'epochs: {step // 2 + 1}' in f.read()
  assert _event_file_pids(os.path.join(model_dir, 'train')) == set(
      chief_pids)
