"""Loading checkpoints: ours (Lightning) and those released with the paper (Lightning ``.ckpt`` or plain
``.pt`` state dicts with ``clip_model.*`` / ``visual_decoder.*`` / ``cross_decoder.*`` keys).

The architecture is read from the state dict itself, so the CLIP file named in the checkpoint is never
needed (the original rebuilds CLIP from that file, and picks the model class from the file *name*).
"""

import inspect
import logging
import string
from pathlib import Path
from typing import Any, Dict, Union

import torch
from torch import Tensor

from strhub.data.utils import CHARSETS
from strhub.models.clip import arch_from_state_dict, load_state_dict_strict
from strhub.models.clip4str.system import CLIP4STRSystem
from strhub.models.serialization import UnsafeFileError, atomic_save, error_summary, load_weights_only
from strhub.pretrained import not_found_message, pretrained_path

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not describe a CLIP4STR model."""


# The original's model/vl4str.yaml values, used for checkpoints that carry no hyper-parameters
# (the 2024 ``.pt`` releases); the shapes are inferred from the weights.
ORIGINAL_DEFAULTS = dict(
    charset_test=string.digits + string.ascii_lowercase,
    batch_size=384,
    lr=8.4e-5,
    warmup_pct=0.075,
    weight_decay=0.2,
    context_length=16,
    dec_num_heads=8,
    dropout=0.1,
    perm_num=6,
    perm_forward=True,
    perm_mirrored=True,
    decode_ar=True,
    refine_iters=1,
    image_detach=True,
    cross_loss_w=1.0,
    image_freeze_nlayer=-1,
    text_freeze_nlayer=6,
    coef_lr=19.0,
    coef_wd=1.0,
)
# Options of the original that change the network; only their default values are implemented.
_UNSUPPORTED = {'cross_token_embeding': False, 'use_share_dim': True, 'clip_cls_eot_feature': False}
# Training-only options of the original implemented at their defaults (teacher forcing with the ground
# truth and the permutation masks in the cross branch); other values only change how a model was trained.
_TRAINING_ONLY = {'cross_gt_context': True, 'cross_cloze_mask': False}

# How a user loads a checkpoint that pickles more than tensors and plain data.
TRUST_HINT = (
    '--trust_checkpoint (test.py, read.py, export_checkpoint.py), trust_checkpoint=true (train.py) or trust=True'
)
_SYSTEM_ARGS = [p for p in inspect.signature(CLIP4STRSystem.__init__).parameters if p != 'self']


def read_checkpoint(path: Union[str, Path], trust: bool = False) -> Dict[str, Any]:
    """The contents of a checkpoint file, or of a shipped model given by name (see ``strhub.pretrained``).

    Args:
        trust: load the file in full, whatever objects it pickles (which can run code): only for files you trust.
            Otherwise only tensors and plain data are read (see :mod:`strhub.models.serialization`), which covers
            our checkpoints and the original's releases.
    """
    path = pretrained_path(path) or Path(path)
    if not path.is_file():
        raise CheckpointError(not_found_message(path))
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


def model_state_dict(ckpt: Dict[str, Any], source: str) -> Dict[str, Tensor]:
    """The network weights with our key names (``model.`` + the released names)."""
    sd = ckpt.get('state_dict', ckpt)
    if not isinstance(sd, dict) or not any(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f'{source} holds no state dict')
    sd = {k[len('module.') :] if k.startswith('module.') else k: v for k, v in sd.items() if isinstance(v, Tensor)}
    if any(k.startswith('clip_model.') for k in sd):  # the original's names
        sd = {f'model.{k}': v for k, v in sd.items()}
    if not any(k.startswith('model.visual_decoder.') for k in sd):
        raise CheckpointError(f'{source} is not a CLIP4STR checkpoint (no visual_decoder.* weights)')
    return sd


def hparams_from_checkpoint(ckpt: Dict[str, Any], sd: Dict[str, Tensor], source: str) -> Dict[str, Any]:
    """Constructor arguments of :class:`CLIP4STRSystem` for a checkpoint (ours or the original's)."""
    hp = dict(ckpt.get('hyper_parameters') or {})
    for key, default in _UNSUPPORTED.items():
        if key in hp and hp[key] != default:
            raise CheckpointError(f'{source}: {key}={hp[key]!r} is not supported (only {default!r})')
    for key, default in _TRAINING_ONLY.items():
        if key in hp and hp[key] != default:
            log.warning('%s was trained with %s=%r; fine-tuning here uses %r', source, key, hp[key], default)
    clip_sd = {k[len('model.clip_model.') :]: v for k, v in sd.items() if k.startswith('model.clip_model.')}
    if 'clip_arch' in hp:
        clip_arch = hp['clip_arch']
    else:
        try:
            clip_arch = arch_from_state_dict(clip_sd, hp.get('img_size')).to_dict()
        except (KeyError, ValueError) as e:
            raise CheckpointError(f'{source}: cannot infer the CLIP architecture: {e}') from None
    dec = 'model.visual_decoder.'
    width = sd[dec + 'pos_queries'].shape[-1]
    num_classes = sd[dec + 'head.weight'].shape[0]
    inferred = dict(
        charset_train=_charset_for(num_classes - 1, source),
        max_label_length=sd[dec + 'pos_queries'].shape[1] - 1,
        img_size=list(clip_arch['image_size']),
        dec_depth=len({k.split('.')[3] for k in sd if k.startswith(dec + 'layers.')}),
        dec_mlp_ratio=sd[dec + 'layers.0.linear1.weight'].shape[0] // width,
        use_language_model=any(k.startswith('model.cross_decoder.') for k in sd),
    )
    kwargs = {**ORIGINAL_DEFAULTS, **inferred, **{k: v for k, v in hp.items() if k in _SYSTEM_ARGS}}
    kwargs.update(clip_pretrained=None, clip_arch=clip_arch)
    kwargs['img_size'] = list(kwargs['img_size'])
    return kwargs


def _charset_for(size: int, source: str) -> str:
    for charset in CHARSETS.values():
        if len(charset) == size:
            return charset
    raise CheckpointError(f'{source}: head of {size} characters and no charset_train in the checkpoint')


def load_from_checkpoint(path: Union[str, Path], trust: bool = False, **overrides: Any) -> CLIP4STRSystem:
    """Loads a CLIP4STR checkpoint (ours or a released one) as a model in eval mode.

    Args:
        path: ``.ckpt`` (Lightning) or ``.pt`` (plain state dict) file, or the name of a shipped model
            (``'clip4str-tiny'``).
        trust: the file is trusted, see :func:`read_checkpoint`.
        overrides: constructor arguments to change, e.g. ``refine_iters=0``, ``decode_ar=False``,
            ``charset_test=...``, ``dropout=0``.

    Returns:
        The :class:`CLIP4STRSystem`; ``model(images)`` gives logits (N, T, C) and
        ``model.tokenizer.decode(logits.softmax(-1))`` the strings and per-character probabilities.
    """
    source = str(path)
    ckpt = read_checkpoint(path, trust)
    sd = model_state_dict(ckpt, source)
    kwargs = hparams_from_checkpoint(ckpt, sd, source)
    unknown = sorted(set(overrides) - set(_SYSTEM_ARGS))
    if unknown:
        raise CheckpointError(f'unknown override(s) {unknown}; valid: {", ".join(_SYSTEM_ARGS)}')
    kwargs.update(overrides)
    system = CLIP4STRSystem(**kwargs)
    load_state_dict_strict(system, sd, source)
    return system.eval()


def export_checkpoint(src: Union[str, Path], dst: Union[str, Path], half: bool = True, trust: bool = False) -> Path:
    """Writes an inference-only copy of a checkpoint: weights (float16 by default) and hyper-parameters,
    without optimizer/scheduler/loop state (a fraction of the size; not resumable). ``dst`` is replaced atomically.

    Raises:
        CheckpointError: ``src`` cannot be read, or ``dst`` cannot be written.
    """
    source = str(src)
    ckpt = read_checkpoint(src, trust)
    sd = model_state_dict(ckpt, source)
    hparams = hparams_from_checkpoint(ckpt, sd, source)
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    try:
        return atomic_save({'state_dict': sd, 'hyper_parameters': hparams}, dst)
    except OSError as e:
        raise CheckpointError(f'cannot write {dst}: {e.strerror or e}') from None
