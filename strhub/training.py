"""What ``tools/train.py`` runs: checks, trainer set-up from the Hydra config, fit."""

import math
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy

from strhub.models.checkpoint import model_state_dict, read_checkpoint
from strhub.models.clip import load_state_dict_strict
from strhub.pretrained import pretrained_path


class TrainingSetupError(ValueError):
    """A configuration problem found before any heavy work."""


def check_paths(config: DictConfig) -> None:
    """Fails fast, naming the config key, on every missing input path."""
    missing = OmegaConf.missing_keys(config)
    if missing:
        raise TrainingSetupError(f'set these config keys: {", ".join(sorted(missing))}')
    root = Path(config.data.root_dir)
    if not root.is_dir():
        raise TrainingSetupError(f'data.root_dir does not exist: {root} (set data.root_dir=... or STR_DATA_ROOT)')
    train_dirs = config.data.train_dir if OmegaConf.is_list(config.data.train_dir) else [config.data.train_dir]
    for d in train_dirs:
        if not (root / 'train' / d).is_dir():
            raise TrainingSetupError(f'training data not found: {root / "train" / d} (data.train_dir={d})')
    if not (root / 'val').is_dir():
        raise TrainingSetupError(f'validation data not found: {root / "val"}')
    for key in ('model.clip_pretrained', 'ckpt_path', 'pretrained'):
        value = OmegaConf.select(config, key)
        if not value:
            continue
        shipped = pretrained_path(value) if key == 'pretrained' else None  # pretrained=clip4str-tiny
        if not (shipped or Path(value)).is_file():
            raise TrainingSetupError(f'{key} file not found: {value}')


class ScheduleCheck(Callback):
    """Refuses to resume a run whose learning-rate schedule was planned for another number of steps.

    OneCycle's length is fixed when a run starts (from max_steps / max_epochs, batch size, devices, accumulation);
    a resumed run with other values would otherwise fail deep in the scheduler, or train on a wrong schedule.
    """

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        saved = (checkpoint.get('lr_schedulers') or [{}])[0].get('total_steps')
        planned = trainer.estimated_stepping_batches
        if saved is not None and saved != planned:
            raise TrainingSetupError(
                f"the checkpoint's learning-rate schedule spans {saved} optimizer steps, this configuration "
                f'{planned}: resume with the settings the run started with (trainer.max_steps, trainer.max_epochs, '
                'model.batch_size, trainer.gpus, trainer.accumulate_grad_batches), or start a new run from its '
                'weights with pretrained=CHECKPOINT'
            )


def _world_size(kw: dict) -> int:
    return kw['devices'] * kw.get('num_nodes', 1)


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
    per_device = max(kw['devices'], 1)
    if isinstance(kw.get('val_check_interval'), int):
        kw['val_check_interval'] = max(kw['val_check_interval'] // per_device, 1)
    if kw.get('max_steps', -1) > 0:
        kw['max_steps'] = max(kw['max_steps'] // per_device, 1)
    return kw


def run_training(config: DictConfig) -> str:
    """Trains as configured; returns the run directory."""
    check_paths(config)
    pl.seed_everything(config.seed, workers=True)
    run_dir = Path(config.run_dir)
    if config.ckpt_path:  # keep logging into the resumed run, as the original
        run_dir = Path(config.ckpt_path).resolve().parents[1]
    print(f'run directory: {run_dir}')
    kw = trainer_kwargs(config)

    datamodule = instantiate(config.data)
    batches = math.ceil(len(datamodule.train_dataset) / (config.data.batch_size * _world_size(kw)))
    if isinstance(kw.get('val_check_interval'), int) and kw['val_check_interval'] > batches:
        print(f'val_check_interval {kw["val_check_interval"]} > {batches} batches per epoch: validating once per epoch')
        kw['val_check_interval'] = 1.0

    model = instantiate(config.model)
    if config.pretrained:
        sd = model_state_dict(read_checkpoint(config.pretrained), config.pretrained)
        load_state_dict_strict(model, sd, config.pretrained)
        print(f'weights loaded from {config.pretrained}')

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
    callbacks = [checkpoint, last, LearningRateMonitor(logging_interval='step'), ScheduleCheck()]
    if config.checkpoint_every_n_steps:  # snapshots kept for learning curves
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir / 'checkpoints' / 'steps',
                every_n_train_steps=config.checkpoint_every_n_steps,
                save_top_k=-1,
                filename='{step}',
            )
        )
    trainer = pl.Trainer(
        **kw,
        logger=TensorBoardLogger(str(run_dir), name='', version='.'),
        callbacks=callbacks,
        default_root_dir=str(run_dir),
    )
    # SceneTextDataModule restores the position inside the epoch itself (its state_dict), which Lightning's
    # warning about mid-epoch checkpoints of non-resumable loaders does not know.
    warnings.filterwarnings('ignore', message="You're resuming from a checkpoint that ended before the epoch ended")
    trainer.fit(model, datamodule=datamodule, ckpt_path=config.ckpt_path)
    if trainer.state.status == 'finished':  # validation-time checkpoints may miss the last steps
        trainer.save_checkpoint(last.dirpath + '/last.ckpt')
    if trainer.is_global_zero:
        print(f'best checkpoint: {checkpoint.best_model_path or "-"} (val_accuracy {checkpoint.best_model_score})')
        print(f'last checkpoint: {last.best_model_path}')
    return str(run_dir)
