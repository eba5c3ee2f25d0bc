"""What ``tools/train.py`` runs: checks, trainer set-up from the Hydra config, fit."""

import math
import os
import signal
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional, Tuple

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, Checkpoint, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_only

from strhub.models.checkpoint import model_state_dict, read_checkpoint
from strhub.models.clip import load_state_dict_strict
from strhub.models.serialization import atomic_save
from strhub.pretrained import pretrained_path


class TrainingSetupError(ValueError):
    """A configuration problem found before any heavy work."""


# The numbers and switches users set on the command line, checked before any heavy work (Hydra reads `abc` as a
# string, `1e3` as a float). Integers: key -> (smallest, largest, what it must be); integral floats (1e3) count.
_INTEGERS = {
    'seed': (0, 2**32 - 1, 'an integer from 0 to 4294967295'),  # Lightning would draw a random seed instead
    'model.batch_size': (1, None, 'a positive integer'),
    'model.max_label_length': (1, None, 'a positive integer'),
    'model.perm_num': (1, None, 'a positive integer'),
    'model.refine_iters': (0, None, 'an integer >= 0'),
    'data.num_workers': (0, None, 'an integer >= 0'),
    'data.curriculum_samples': (0, None, 'an integer >= 0'),
    'data.bucket_batches': (0, None, 'an integer >= 0'),
    'trainer.gpus': (0, None, 'an integer >= 0 (0: CPU)'),
    'trainer.devices': (1, None, 'a positive integer'),
    'trainer.num_nodes': (1, None, 'a positive integer'),
    'trainer.max_steps': (1, None, 'a positive integer or -1 (no limit)'),
    'trainer.max_epochs': (1, None, 'a positive integer or -1 (no limit)'),
    'trainer.accumulate_grad_batches': (1, None, 'a positive integer'),
    'trainer.log_every_n_steps': (1, None, 'a positive integer'),
    'trainer.num_sanity_val_steps': (-1, None, 'an integer >= -1 (-1: all)'),
    'save_top_k': (-1, None, 'an integer >= -1 (-1: all)'),
    'checkpoint_every_n_steps': (1, None, 'a positive integer or null'),
}
_NO_LIMIT = ('trainer.max_steps', 'trainer.max_epochs')  # also take -1
# Numbers: key -> (lower bound, whether the bound itself is allowed, upper bound, what it must be).
_NUMBERS = {
    'model.lr': (0, False, None, 'a positive number'),
    'model.coef_lr': (0, False, None, 'a positive number'),
    'model.weight_decay': (0, True, None, 'a number >= 0'),
    'model.coef_wd': (0, True, None, 'a number >= 0'),
    'model.warmup_pct': (0, True, 1, 'a number from 0 to 1'),
    'model.dropout': (0, True, 1, 'a number from 0 to 1'),
    'trainer.gradient_clip_val': (0, True, None, 'a number >= 0 or null'),
}
# A number of batches (key -> the smallest) or, as a float from 0 to 1, a fraction of them.
_COUNT_OR_FRACTION = {
    'trainer.val_check_interval': (1, 'a positive integer (batches) or a number in (0, 1] (a fraction of an epoch)'),
    'trainer.limit_val_batches': (0, 'an integer >= 0 (batches) or a number from 0 to 1 (a fraction)'),
}
_SWITCHES = (
    'trust_checkpoint',
    'find_unused_parameters',
    'data.augment',
    'data.remove_whitespace',
    'data.normalize_unicode',
    'data.openai_meanstd',
    'model.decode_ar',
    'model.use_language_model',
)
_NULLABLE = ('checkpoint_every_n_steps', 'trainer.gradient_clip_val', 'trainer.max_epochs')
_ABSENT = object()


def _checked(key: str, value: Any) -> Any:
    """``value`` if it suits ``key`` (an integral float given for an integer as an int), else a TrainingSetupError."""
    integer = int(value) if isinstance(value, float) and value.is_integer() else value
    integer = integer if isinstance(integer, int) and not isinstance(integer, bool) else None
    if key in _SWITCHES:
        what = 'true or false'
        if isinstance(value, bool):
            return value
    elif key in _INTEGERS:
        low, high, what = _INTEGERS[key]
        if integer is not None and low <= integer <= (math.inf if high is None else high):
            return integer
        if integer == -1 and key in _NO_LIMIT:
            return integer
    elif key in _COUNT_OR_FRACTION:
        low, what = _COUNT_OR_FRACTION[key]
        if isinstance(value, float) and (0 < value <= 1 or value == low == 0):  # a fraction
            return value
        if integer is not None and integer >= low:
            return integer
    else:
        low, inclusive, high, what = _NUMBERS[key]
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        number = value if finite else math.nan  # fails every comparison
        if (number > low or (inclusive and number == low)) and number <= (math.inf if high is None else high):
            return value
    raise TrainingSetupError(f'{key}={value!r} must be {what}')


def check_values(config: DictConfig) -> None:
    """Fails fast, naming key and value, on an unset key or a number or switch of the wrong type or range; stores
    integral floats given for integer keys (``trainer.max_steps=1e5``) as integers."""
    missing = OmegaConf.missing_keys(config)
    if missing:
        raise TrainingSetupError(f'set these config keys: {", ".join(sorted(missing))}')
    for key in (*_INTEGERS, *_NUMBERS, *_COUNT_OR_FRACTION, *_SWITCHES):
        value = OmegaConf.select(config, key, default=_ABSENT)
        if value is not _ABSENT and not (value is None and key in _NULLABLE):
            checked = _checked(key, value)
            if type(checked) is not type(value):  # 1e3 given for an integer
                OmegaConf.update(config, key, checked)


def check_checkpoint_file(key: str, path: Path, trust: bool) -> None:
    """A cheap look at a checkpoint before any heavy work. ``torch.save`` writes a zip archive whose index sits at
    the end, so an empty or truncated file (a save killed half-way) fails here, with the file named, instead of
    with a bare EOFError after the dataset is indexed."""
    with path.open('rb') as f:
        if f.read(2) == b'\x80\x02':  # torch's format before 1.6, not a zip archive: read as it is
            return
    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError) as e:
        reason = 'empty file' if path.stat().st_size == 0 else str(e)
        raise TrainingSetupError(f'{key} {path} is truncated or not a checkpoint ({reason})') from None
    if key == 'ckpt_path' and not trust:  # Lightning resumes with a weights-only load (AtomicCheckpointIO)
        unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        if unsafe:
            raise TrainingSetupError(
                f'ckpt_path {path} pickles {", ".join(unsafe)}, which is not a tensor or plain data: loading it in '
                'full can run code. Only if you trust the file, resume with trust_checkpoint=true (or start from its '
                'weights with pretrained=CHECKPOINT)'
            )


def check_paths(config: DictConfig) -> None:
    """Fails fast, naming the config key, on every missing input path or unreadable checkpoint."""
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
        path = (pretrained_path(value) if key == 'pretrained' else None) or Path(value)  # pretrained=clip4str-tiny
        if not path.is_file():
            raise TrainingSetupError(f'{key} file not found: {value}')
        if key != 'model.clip_pretrained':
            check_checkpoint_file(key, path, config.trust_checkpoint)


def choose_run_dir(ckpt_path: Optional[str], new_dir: Path, given: bool) -> Tuple[Path, str]:
    """Where a run writes, and why (printed before training starts).

    ``hydra.run.dir`` when the command line sets it; when resuming from a checkpoint in a run's ``checkpoints/``
    (or ``checkpoints/steps/``) folder, that run's folder, as the original; else Hydra's new run folder.
    """
    if given:
        return new_dir, 'hydra.run.dir'
    if ckpt_path:
        ckpt = Path(ckpt_path).resolve()
        if ckpt.parent.name == 'checkpoints':
            return ckpt.parents[1], 'the run ckpt_path belongs to; hydra.run.dir=... writes elsewhere'
        if ckpt.parent.name == 'steps' and ckpt.parents[1].name == 'checkpoints':
            return ckpt.parents[2], 'the run ckpt_path belongs to; hydra.run.dir=... writes elsewhere'
        return new_dir, "a new run: ckpt_path is not in a run's checkpoints/ folder"
    return new_dir, 'a new run'


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader and writer, with each file written beside its destination and renamed over it
    (:func:`~strhub.models.serialization.atomic_save`): a kill at any moment leaves the previous checkpoint intact.
    Lightning's own writer moves a file from the temporary folder, a copy when that is on another filesystem (usual
    on clusters), which a kill leaves truncated.

    Resuming (``ckpt_path=``) reads tensors and plain data only, unless ``trust`` (``trust_checkpoint=true``).
    """

    def __init__(self, trust: bool = False) -> None:
        self.trust = trust

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f'{type(self).__name__} takes no storage_options')
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only: Optional[bool] = None):
        weights_only = not self.trust if weights_only is None else weights_only
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


@rank_zero_only
def remove_partial_checkpoints(ckpt_dir: Path) -> None:
    """Deletes the partial files of saves that were killed (``.NAME.tmp-PID``, see ``atomic_save``): the
    checkpoints beside them are complete."""
    for path in sorted(ckpt_dir.glob('**/.*.tmp-*')):
        if path.is_file() and path.name.rsplit('-', 1)[1].isdigit():
            path.unlink()
            print(f'removed the partial file of a killed save: {path}')


class StopOnInterrupt(Checkpoint):
    """Ctrl-C during training: stops at the end of the current optimizer step, after writing ``last.ckpt`` there
    (exactly resumable, like the validation-time one), so the steps since the last validation are kept.

    Lightning's own handling stops wherever the KeyboardInterrupt lands, mid-step, where weights, loop counters and
    data position can disagree, and saves nothing. A second Ctrl-C stops at once, without saving; an interrupted
    save leaves the previous file (atomic writes). A ``Checkpoint``, so that Lightning runs it after the
    ModelCheckpoints (a snapshot due at the same step is written first).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pid = os.getpid()
        self._previous = None
        self._training = self._requested = False
        self._step = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Before any DataLoader worker starts: forked workers inherit the handler and leave Ctrl-C to this process.
        # Not where Ctrl-C is ignored (a job started in the background) or not Python's (an embedding application).
        if stage == 'fit' and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a DataLoader worker
            return
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C stops at once
        if not self._training:  # the sanity check, or set-up: nothing to save yet
            raise KeyboardInterrupt
        self._requested = True
        print('\nCtrl-C: stopping after this step, to save last.ckpt (Ctrl-C again: stop at once, unsaved)', flush=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.global_step == self._step:  # inside a gradient accumulation: no step to resume from
            return
        stop = self._requested
        if trainer.world_size > 1:  # every rank stops at the same step (the save is collective)
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.save_checkpoint(self.path)  # only global rank 0 writes
            if trainer.is_global_zero:
                print(f'interrupted at step {trainer.global_step}: saved {self.path} (resume with ckpt_path=...)')
            raise KeyboardInterrupt

    def _restore(self) -> None:
        if signal.getsignal(signal.SIGINT) == self._on_sigint:  # not Lightning's SIG_IGN while it shuts down
            signal.signal(signal.SIGINT, self._previous)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()


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


def run_training(config: DictConfig, run_dir_given: bool = False) -> str:
    """Trains as configured; returns the run directory.

    Args:
        config: the composed configuration, with ``run_dir``: the folder Hydra made for this run.
        run_dir_given: whether the user chose that folder (``hydra.run.dir=``), which a resume then keeps.
    """
    check_values(config)
    check_paths(config)
    pl.seed_everything(config.seed, workers=True)
    run_dir, why = choose_run_dir(config.ckpt_path, Path(config.run_dir), run_dir_given)
    print(f'run directory: {run_dir} ({why})')
    if run_dir != Path(config.run_dir):
        print(f"this launch's config and log: {config.run_dir}")
    remove_partial_checkpoints(run_dir / 'checkpoints')
    kw = trainer_kwargs(config)
    pretrained = None
    if config.pretrained:  # read before the dataset is indexed: a bad file fails at once
        pretrained = model_state_dict(
            read_checkpoint(config.pretrained, trust=config.trust_checkpoint), config.pretrained
        )

    datamodule = instantiate(config.data)
    batches = math.ceil(len(datamodule.train_dataset) / (config.data.batch_size * _world_size(kw)))
    if isinstance(kw.get('val_check_interval'), int) and kw['val_check_interval'] > batches:
        print(f'val_check_interval {kw["val_check_interval"]} > {batches} batches per epoch: validating once per epoch')
        kw['val_check_interval'] = 1.0

    model = instantiate(config.model)
    if pretrained is not None:
        load_state_dict_strict(model, pretrained, config.pretrained)
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
    callbacks.append(StopOnInterrupt(Path(last.dirpath) / 'last.ckpt'))
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
    trainer.fit(model, datamodule=datamodule, ckpt_path=config.ckpt_path)
    if trainer.state.status == 'finished':  # validation-time checkpoints may miss the last steps
        trainer.save_checkpoint(last.dirpath + '/last.ckpt')
    if trainer.is_global_zero:
        print(f'best checkpoint: {checkpoint.best_model_path or "-"} (val_accuracy {checkpoint.best_model_score})')
        print(f'last checkpoint: {last.best_model_path}')
    return str(run_dir)
