"""What ``tools/train.py`` runs: the trainer set-up from the Hydra config, then fit."""

import math
import signal
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities.exceptions import SIGTERMException

from .checkpointing import (
    AtomicCheckpointIO,
    RecordNormalisation,
    ScheduleCheck,
    StopAtStep,
    StopOnInterrupt,
    remove_partial_checkpoints,
)
from .checks import TrainingSetupError, check_paths, check_values, choose_run_dir
from .pretrained import fill_from_checkpoint, load_pretrained, read_pretrained

_STRHUB = Path(__file__).resolve().parents[1]


def _world_size(kw: dict) -> int:
    return kw['devices'] * kw.get('num_nodes', 1)


def _per_device(steps: int, kw: dict) -> int:
    """A count of steps given for one device, as the original gives them, on ``kw``'s devices."""
    return max(steps // max(kw['devices'], 1), 1)


def trainer_kwargs(config: DictConfig) -> dict:
    """Maps the original's ``trainer.gpus`` onto Lightning 2 accelerator/devices/strategy/precision."""
    kw = OmegaConf.to_container(config.trainer, resolve=True)
    kw.pop('_target_', None)
    kw.pop('_convert_', None)
    gpus = kw.pop('gpus')
    if gpus and gpus > 0:
        if torch.cuda.device_count() < gpus:
            raise TrainingSetupError(
                f'trainer.gpus={gpus} but {torch.cuda.device_count()} CUDA device(s) visible; '
                'use trainer.gpus=0 for CPU'
            )
        kw.update(accelerator='gpu', devices=gpus)
    else:
        kw.setdefault('devices', 1)
        kw['accelerator'] = 'cpu'
    if kw.get('precision') is None:
        kw['precision'] = '16-mixed' if kw['accelerator'] == 'gpu' else '32-true'
    kw['use_distributed_sampler'] = False  # SceneTextDataModule shards (and resumes) its own sampling
    if _world_size(kw) > 1:
        kw['strategy'] = DDPStrategy(find_unused_parameters=config.find_unused_parameters, gradient_as_bucket_view=True)
    # As the original: the validation interval and step budget are given for one device.
    if isinstance(kw.get('val_check_interval'), int):
        kw['val_check_interval'] = _per_device(kw['val_check_interval'], kw)
    if kw.get('max_steps', -1) > 0:
        kw['max_steps'] = _per_device(kw['max_steps'], kw)
    return kw


def _raised_by_strhub(e: BaseException) -> bool:
    """A ValueError that strhub's own checks raised (bad input or config), not one from deeper down (a bug)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return isinstance(e, ValueError) and tb is not None and Path(tb.tb_frame.f_code.co_filename).is_relative_to(_STRHUB)


def _build(node: DictConfig, key: str):
    """``instantiate(node)``; bad input caught by strhub's checks inside it (a CLIP file of another architecture,
    conflicting options) becomes a one-line TrainingSetupError naming the config key instead of Hydra's wrapper."""
    try:
        return instantiate(node)
    except InstantiationException as e:
        if _raised_by_strhub(e.__cause__):
            raise TrainingSetupError(f'{key}: {e.__cause__}') from None
        raise


def run_training(config: DictConfig, run_dir_given: bool = False) -> str:
    """Trains as configured; returns the run directory.

    Args:
        config: the composed configuration, with ``run_dir``: the folder Hydra made for this run.
        run_dir_given: whether the user chose that folder (``hydra.run.dir=``), which a resume then keeps.
    """
    pretrained = None
    if config.pretrained:  # first: it fills the model keys the config leaves null, and a bad file fails at once
        pretrained = read_pretrained(config)
        filled = fill_from_checkpoint(config, pretrained)
        if filled:
            print(f'from {config.pretrained}:' + ''.join(f'\n  {line}' for line in filled))
    check_values(config)
    check_paths(config)
    pl.seed_everything(config.seed, workers=True)
    run_dir, why = choose_run_dir(config.ckpt_path, Path(config.run_dir), run_dir_given)
    print(f'run directory: {run_dir} ({why})')
    if run_dir != Path(config.run_dir):
        print(f"this launch's config and log: {config.run_dir}")
    remove_partial_checkpoints(run_dir / 'checkpoints')
    kw = trainer_kwargs(config)
    datamodule = _build(config.data, 'data')
    batches = math.ceil(len(datamodule.train_dataset) / (config.data.batch_size * _world_size(kw)))
    if isinstance(kw.get('val_check_interval'), int) and kw['val_check_interval'] > batches:
        print(f'val_check_interval {kw["val_check_interval"]} > {batches} batches per epoch: validating once per epoch')
        kw['val_check_interval'] = 1.0

    model = _build(config.model, 'model')
    if pretrained is not None:
        report = load_pretrained(model, pretrained)
        print(f'weights loaded from {config.pretrained}' + ''.join(f'\n  {line}' for line in report))

    checkpoint = ModelCheckpoint(
        dirpath=run_dir / 'checkpoints',
        monitor='val_accuracy',
        mode='max',
        save_top_k=config.save_top_k,
        filename='{epoch}-{step}-{val_accuracy:.4f}-{val_NED:.4f}',
    )
    # Lightning's save_last writes last.ckpt only when a best-k file is written in the same step: a run whose
    # accuracy stalls would resume from its last improvement. This callback rewrites it at every validation.
    last = ModelCheckpoint(
        dirpath=run_dir / 'checkpoints',
        filename='last',
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=False,
        enable_version_counter=False,
    )
    last_ckpt = Path(last.dirpath) / 'last.ckpt'
    callbacks = [
        checkpoint,
        last,
        LearningRateMonitor(logging_interval='step'),
        ScheduleCheck(),
        RecordNormalisation(config.data.openai_meanstd),
    ]
    if config.checkpoint_every_n_steps:  # snapshots kept for learning curves
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir / 'checkpoints' / 'steps',
                every_n_train_steps=config.checkpoint_every_n_steps,
                save_top_k=-1,
                filename='{step}',
            )
        )
    stop = None
    if config.stop_at_step:  # a step budget, as trainer.max_steps
        stop = StopAtStep(_per_device(config.stop_at_step, kw), last_ckpt)
        callbacks.append(stop)
    interrupt = StopOnInterrupt(last_ckpt)
    callbacks.append(interrupt)
    trainer = pl.Trainer(
        **kw,
        logger=TensorBoardLogger(str(run_dir), name='', version='.'),
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO(trust=config.trust_checkpoint)],
    )
    # SceneTextDataModule restores the position inside the epoch itself (its state_dict), which Lightning's
    # warning about mid-epoch checkpoints of non-resumable loaders does not know.
    warnings.filterwarnings('ignore', message="You're resuming from a checkpoint that ended before the epoch ended")
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=config.ckpt_path)
    except SIGTERMException:
        # Lightning stops at a step boundary on SIGTERM and ends with exit status 0, so a script (`set -e`) went on to
        # its next stage with a half-trained model; 143 is the status of a process ended by SIGTERM.
        if trainer.is_global_zero:
            if interrupt.saved_step == trainer.global_step:
                saved = f'saved {last_ckpt} there: resume with ckpt_path={last_ckpt}'
            elif last_ckpt.is_file():  # the signal came during a validation: the one before it saved last
                saved = f'resume from the last checkpoint: ckpt_path={last_ckpt}'
            else:
                saved = 'no checkpoint was saved yet: start the run again'
            print(f'stopped by SIGTERM at step {trainer.global_step}; {saved}', file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except SystemExit as e:
        # Lightning ends a run stopped by Ctrl-C (saved by StopOnInterrupt, or a second Ctrl-C) with status 1, the
        # status of any error; 130 is that of a process interrupted by SIGINT, as our other tools end.
        if trainer.interrupted and e.code == 1:
            raise SystemExit(128 + signal.SIGINT) from None
        raise
    # Validation-time checkpoints may miss the last steps (StopAtStep saved at its step).
    if trainer.state.status == 'finished' and not (stop and stop.stopped):
        trainer.save_checkpoint(last_ckpt, weights_only=False)  # resumable: the full state
    if trainer.is_global_zero:
        print(f'best checkpoint: {checkpoint.best_model_path or "-"} (val_accuracy {checkpoint.best_model_score})')
        print(f'last checkpoint: {last.best_model_path}')
    return str(run_dir)
