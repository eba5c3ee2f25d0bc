"""Loading checkpoints of any of our models (:mod:`strhub.models.systems`): ours (Lightning ``.ckpt``), exported
inference copies, and the original's releases."""

import inspect
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import pytorch_lightning as pl
import torch
from torch import Tensor

from strhub.models.errors import CheckpointError
from strhub.models.serialization import (
    UnsafeFileError,
    WeightsMismatchError,
    atomic_save,
    error_summary,
    load_state_dict_strict,
    load_weights_only,
    strip_module_prefix,
)
from strhub.models.systems import SYSTEMS, System
from strhub.pretrained import not_found_message, pretrained_path

__all__ = [
    'CheckpointError',
    'read_checkpoint',
    'model_state_dict',
    'load_from_checkpoint',
    'export_checkpoint',
    'trained_with_openai_meanstd',
]

# The images' normalisation the weights were trained with (``data.openai_meanstd``): written by training, kept by
# exports and blends, so that fine-tuning feeds the network what it learnt on. An addition: the original's
# checkpoints do not record it; they trained with the OpenAI CLIP statistics, its default.
OPENAI_MEANSTD_KEY = 'openai_meanstd'

# How a user loads a checkpoint that pickles more than tensors and plain data.
TRUST_HINT = '--trust_checkpoint (test.py, read.py, export.py), trust_checkpoint=true (train.py) or trust=True'


def read_checkpoint(path: Union[str, Path], trust: bool = False) -> Dict[str, Any]:
    """The contents of a checkpoint file, or of a shipped or released model given by name (see ``strhub.pretrained``).

    Args:
        trust: load the file in full, whatever objects it pickles (which can run code): only for files you trust.
            Otherwise only tensors and plain data are read (see :mod:`strhub.models.serialization`), which covers
            our checkpoints and the original's releases.
    """
    given, path = path, pretrained_path(path) or Path(path)
    if not path.is_file():
        raise CheckpointError(not_found_message(given))
    try:
        if trust:
            ckpt = torch.load(str(path), map_location='cpu', weights_only=False)
        else:
            ckpt = load_weights_only(path, TRUST_HINT)
    except UnsafeFileError as e:
        raise CheckpointError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - any reader failure is reported with the file name
        hint = ' (truncated or not a checkpoint?)' if 'zip archive' in str(e) or isinstance(e, EOFError) else ''
        raise CheckpointError(f'cannot read checkpoint {path}: {error_summary(e)}{hint}') from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path} is not a checkpoint: it holds a {type(ckpt).__name__}, not a dict')
    return ckpt


def _weights(ckpt: Dict[str, Any], source: str) -> Dict[str, Tensor]:
    sd = ckpt.get('state_dict', ckpt)
    if not isinstance(sd, dict) or not any(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f'{source} holds no state dict')
    return strip_module_prefix({k: v for k, v in sd.items() if isinstance(v, Tensor)})


def system_of(ckpt: Dict[str, Any], source: str) -> Tuple[System, Dict[str, Tensor]]:
    """The model a checkpoint holds (the name it records, else recognised by its keys) and its weights, our names."""
    sd = _weights(ckpt, source)
    name = ckpt.get('system')
    if name is not None:
        if name not in SYSTEMS:
            raise CheckpointError(f'{source} holds a {name!r} model; known: {", ".join(SYSTEMS)}')
        system = SYSTEMS[name]
    else:
        found = [s for s in SYSTEMS.values() if s.recognise(ckpt, sd)]
        if not found:
            hp_name = (ckpt.get('hyper_parameters') or {}).get('name')
            what = f' (hyper_parameters name={hp_name!r})' if hp_name else ''
            raise CheckpointError(f'{source} is not a checkpoint of a known model{what}; known: {", ".join(SYSTEMS)}')
        system = found[0]
    return system, system.state_dict(sd)


def trained_with_openai_meanstd(ckpt: Dict[str, Any], source: str) -> bool:
    """Whether a checkpoint's weights were trained on images normalised with the OpenAI CLIP statistics (else
    0.5/0.5): its record, else true (the original's default, which its releases were trained with)."""
    value = ckpt.get(OPENAI_MEANSTD_KEY, True)
    if not isinstance(value, bool):
        raise CheckpointError(f'{source}: {OPENAI_MEANSTD_KEY!r} must be true or false, got {value!r}')
    return value


def model_state_dict(ckpt: Dict[str, Any], source: str) -> Dict[str, Tensor]:
    """The network weights of a checkpoint with our key names."""
    return system_of(ckpt, source)[1]


def load_from_checkpoint(path: Union[str, Path], trust: bool = False, **overrides: Any) -> pl.LightningModule:
    """Loads a checkpoint (ours or a released one) as a model in eval mode.

    Args:
        path: ``.ckpt`` (Lightning) or ``.pt`` (plain state dict) file, or the name of a shipped or released model
            (``'clip4str-tiny'``, ``'clip4str-base16x16'``: see :mod:`strhub.pretrained`).
        trust: the file is trusted, see :func:`read_checkpoint`.
        overrides: constructor arguments to change, e.g. ``refine_iters=0``, ``decode_ar=False``,
            ``charset_test=...``, ``dropout=0``.

    Returns:
        The system (e.g. :class:`~strhub.models.clip4str.system.CLIP4STRSystem`); ``model(images)`` gives logits
        (N, T, C) and ``model.tokenizer.decode(logits.softmax(-1))`` the strings and per-character probabilities.
    """
    source = str(path)
    ckpt = read_checkpoint(path, trust)
    system, sd = system_of(ckpt, source)
    kwargs = system.hparams(ckpt, sd, source)
    valid = [p for p in inspect.signature(system.cls.__init__).parameters if p != 'self']
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise CheckpointError(f'unknown override(s) {unknown}; valid: {", ".join(valid)}')
    model = system.cls(**{**kwargs, **overrides})
    try:
        load_state_dict_strict(model, sd, source)
    except WeightsMismatchError as e:
        raise CheckpointError(str(e)) from None
    return model.eval()


def export_checkpoint(src: Union[str, Path], dst: Union[str, Path], half: bool = True, trust: bool = False) -> Path:
    """Writes an inference-only copy of a checkpoint: weights (float16 by default), hyper-parameters and the model's
    name, without optimizer/scheduler/loop state (a fraction of the size; not resumable). ``dst`` is replaced
    atomically.

    Raises:
        CheckpointError: ``src`` cannot be read, or ``dst`` cannot be written.
    """
    source = str(src)
    ckpt = read_checkpoint(src, trust)
    system, sd = system_of(ckpt, source)
    hparams = system.hparams(ckpt, sd, source)
    return write_inference_checkpoint(system, sd, hparams, dst, half, trained_with_openai_meanstd(ckpt, source))


def write_inference_checkpoint(
    system: System,
    sd: Dict[str, Tensor],
    hparams: Dict[str, Any],
    dst: Union[str, Path],
    half: bool = True,
    openai_meanstd: bool = True,
) -> Path:
    """Writes ``system``'s weights ``sd`` (floating point ones as float16 if ``half``, else float32),
    ``hparams`` and the training normalisation (``openai_meanstd``, see :func:`trained_with_openai_meanstd`) to
    ``dst``, atomically, in the format :func:`export_checkpoint` writes.

    Raises:
        CheckpointError: ``dst`` cannot be written.
    """
    dtype = torch.float16 if half else torch.float32
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    name = next(n for n, s in SYSTEMS.items() if s is system)
    try:
        ckpt = {'system': name, 'state_dict': sd, 'hyper_parameters': hparams, OPENAI_MEANSTD_KEY: openai_meanstd}
        return atomic_save(ckpt, dst)
    except OSError as e:
        raise CheckpointError(f'cannot write {dst}: {e.strerror or e}') from None
