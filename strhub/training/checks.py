"""Checks of a training configuration, done before any heavy work, and where a run writes."""

import math
import zipfile
from pathlib import Path
from typing import Any, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

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
    'stop_at_step': (1, None, 'a positive integer or null'),
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
    'pretrained_lr_scale': (0, False, None, 'a positive number'),
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
_NULLABLE = ('checkpoint_every_n_steps', 'stop_at_step', 'trainer.gradient_clip_val', 'trainer.max_epochs')
_ABSENT = object()


def checked_value(key: str, value: Any) -> Any:
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
            checked = checked_value(key, value)
            if type(checked) is not type(value):  # 1e3 given for an integer
                OmegaConf.update(config, key, checked)
    stop, max_steps = OmegaConf.select(config, 'stop_at_step'), OmegaConf.select(config, 'trainer.max_steps')
    if stop and max_steps and 0 < max_steps < stop:
        raise TrainingSetupError(
            f'stop_at_step={stop} is past trainer.max_steps={max_steps}, where the run ends anyway: stop_at_step ends '
            'a run early, its learning-rate schedule still planned for max_steps'
        )


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
