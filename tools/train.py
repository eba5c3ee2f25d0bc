#!/usr/bin/env python3
"""Train CLIP4STR (Hydra). Examples:

    python tools/train.py +experiment=clip4str-b16 model.clip_pretrained=$CLIP_ROOT/ViT-B-16.pt \\
        data.root_dir=$STR_DATA_ROOT trainer.gpus=8 model.batch_size=128
    python tools/train.py +experiment=clip4str-tiny            # CPU, built-in synthetic data
    python tools/train.py ... ckpt_path=outputs/RUN/checkpoints/last.ckpt   # resume exactly
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from strhub.training import TrainingSetupError, run_training


@hydra.main(config_path=str(Path(__file__).resolve().parents[1] / 'configs'), config_name='main', version_base='1.2')
def main(config: DictConfig) -> None:
    with open_dict(config):
        config.run_dir = HydraConfig.get().runtime.output_dir
    try:
        run_training(config)
    except TrainingSetupError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    main()
