#!/usr/bin/env python3
"""Train CLIP4STR: Hydra overrides on the command line; ``python tools/train.py --help`` shows examples (written in
``configs/main.yaml``, ``hydra.help``) and the config."""

import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from strhub.models.checkpoint import CheckpointError
from strhub.training import TrainingSetupError, run_training


def run_dir_given(hydra_config: DictConfig) -> bool:
    """Whether the command line sets hydra.run.dir. Lightning starts the other DDP ranks with this script, adding
    hydra.run.dir=<rank 0's folder> and hydra.job.name=train_ddp_process_N: that one is not the user's."""
    keys = [override.split('=', 1)[0].lstrip('+~') for override in hydra_config.overrides.hydra]
    return keys.count('hydra.run.dir') > hydra_config.job.name.startswith('train_ddp_process_')


def remove_if_only_hydra_files(run_dir: Path, hydra_config: DictConfig) -> None:
    """Removes the run folder of a start that failed its checks if it holds nothing but what Hydra wrote there
    (its config and job log): a folder with anything else in it, as a run being resumed, is kept."""
    config_dir = Path(hydra_config.output_subdir) if hydra_config.output_subdir else None
    hydra_files = {Path(f'{hydra_config.job.name}.log')}
    if config_dir:
        hydra_files |= {config_dir / name for name in ('config.yaml', 'hydra.yaml', 'overrides.yaml')}
    if not run_dir.is_dir():
        return
    found = set()
    for folder, dirs, files in os.walk(run_dir):  # symbolic links count as found, never followed
        found |= {(Path(folder) / name).relative_to(run_dir) for name in files + dirs}
    if found <= hydra_files | {config_dir}:
        shutil.rmtree(run_dir)


@hydra.main(config_path=str(Path(__file__).resolve().parents[1] / 'configs'), config_name='main', version_base='1.2')
def main(config: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    with open_dict(config):
        config.run_dir = str(run_dir)
    try:
        run_training(config, run_dir_given=run_dir_given(hydra_config))
    except (TrainingSetupError, CheckpointError) as e:
        remove_if_only_hydra_files(run_dir, hydra_config)
        print(f'train.py: error: {e}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    main()
