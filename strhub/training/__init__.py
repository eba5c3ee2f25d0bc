"""Training: the configuration checks, the checkpointing that loses nothing, the trainer set-up and fit."""

from .checkpointing import (
    AtomicCheckpointIO,
    RecordNormalisation,
    ScheduleCheck,
    StopAtStep,
    StopOnInterrupt,
    remove_partial_checkpoints,
)
from .checks import TrainingSetupError, check_checkpoint_file, check_paths, check_values, choose_run_dir
from .run import run_training, trainer_kwargs

__all__ = [
    'AtomicCheckpointIO',
    'RecordNormalisation',
    'ScheduleCheck',
    'StopAtStep',
    'StopOnInterrupt',
    'TrainingSetupError',
    'check_checkpoint_file',
    'check_paths',
    'check_values',
    'choose_run_dir',
    'remove_partial_checkpoints',
    'run_training',
    'trainer_kwargs',
]
