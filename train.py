"""Trains and evaluates UniPercepNet-S with Model Garden's train driver.

  python train.py --experiment=unipercepnet_coco --mode=train_and_eval \
      --model_dir=DIR [--config_file=x.yaml] [--params_override=...]
"""

from absl import app

from official.common import flags as tfm_flags
from official.vision import train
import registry_imports  # pylint: disable=unused-import


if __name__ == '__main__':
  tfm_flags.define_flags()
  app.run(train.main)
