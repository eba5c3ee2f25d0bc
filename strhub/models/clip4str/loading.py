"""How CLIP4STR checkpoints are read: ours, and the original's releases (Lightning ``.ckpt`` or plain ``.pt`` state
dicts with ``clip_model.*`` / ``visual_decoder.*`` / ``cross_decoder.*`` keys).

The architecture is read from the state dict itself, so the CLIP file named in the checkpoint is never needed (the
original rebuilds CLIP from that file, and picks the model class from the file *name*).
"""

import inspect
import logging
import string
from typing import Any, Dict

from torch import Tensor

from strhub.data.utils import CHARSETS
from strhub.models.clip import arch_from_state_dict
from strhub.models.clip4str.system import CLIP4STRSystem
from strhub.models.errors import CheckpointError

log = logging.getLogger(__name__)
_SYSTEM_ARGS = [p for p in inspect.signature(CLIP4STRSystem.__init__).parameters if p != 'self']

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


def recognise(ckpt: Dict[str, Any], sd: Dict[str, Tensor]) -> bool:
    """A CLIP4STR checkpoint of ours or of the original (not its STR-Adapter variant, which has the same decoders)."""
    name = str((ckpt.get('hyper_parameters') or {}).get('name', ''))
    return name != 'str_adapter' and any(k.startswith(('visual_decoder.', 'model.visual_decoder.')) for k in sd)


def state_dict(sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The weights with our key names (``model.`` + the released names)."""
    if any(k.startswith('clip_model.') for k in sd):  # the original's names
        return {f'model.{k}': v for k, v in sd.items()}
    return sd


def hparams(
    ckpt: Dict[str, Any], sd: Dict[str, Tensor], source: str, defaults: Dict[str, Any] = ORIGINAL_DEFAULTS
) -> Dict[str, Any]:
    """Constructor arguments of :class:`CLIP4STRSystem` for a checkpoint (ours or the original's); ``defaults`` for
    what a release does not record."""
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
    missing = [k for k in (dec + 'pos_queries', dec + 'head.weight', dec + 'layers.0.linear1.weight') if k not in sd]
    if missing:
        raise CheckpointError(f'{source} is not a CLIP4STR checkpoint (no {", ".join(missing)})')
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
    kwargs = {**defaults, **inferred, **{k: v for k, v in hp.items() if k in _SYSTEM_ARGS}}
    kwargs.update(clip_pretrained=None, clip_arch=clip_arch)
    kwargs['img_size'] = list(kwargs['img_size'])
    return kwargs


def _charset_for(size: int, source: str) -> str:
    for charset in CHARSETS.values():
        if len(charset) == size:
            return charset
    raise CheckpointError(f'{source}: head of {size} characters and no charset_train in the checkpoint')


# --- The original's STR-Adapter checkpoints (spec §9): its decoder at the top level, CLIP always frozen --------------

# What its model/str_adapter.yaml and code set where a checkpoint records nothing. Its optimiser never receives the
# CLIP's parameters, whatever freeze_backbone says, so the CLIP is frozen here in every case.
ADAPTER_DEFAULTS = dict(
    ORIGINAL_DEFAULTS,
    adapter_type='linear',
    block_ids=[0, 4, 8, 11],
    prune_reduction=4,
    image_freeze_nlayer=12,
    text_freeze_nlayer=12,
    lr_ref_batch=256,
    lr_sqrt_devices=True,
)
# Its names -> ours (under ``model.``): the decoder and the parts PARSeq keeps beside it.
_ADAPTER_RENAMES = (
    ('decoder.', 'visual_decoder.'),
    ('head.', 'visual_decoder.head.'),
    ('text_embed.', 'visual_decoder.text_embed.'),
    ('pos_queries', 'visual_decoder.pos_queries'),
)


def recognise_adapter(ckpt: Dict[str, Any], sd: Dict[str, Tensor]) -> bool:
    """A checkpoint of the original's STR-Adapter: its decoder at the top level (its name alone is not enough: the
    weights decide what is built)."""
    return 'pos_queries' in sd and any(k.startswith('decoder.layers.') for k in sd)


def adapter_state_dict(sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The weights with our key names (a checkpoint already in ours passes unchanged)."""
    if 'pos_queries' not in sd:
        return sd
    out = {}
    for key, value in sd.items():
        for old, new in _ADAPTER_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[f'model.{key}'] = value
    return out


def adapter_hparams(ckpt: Dict[str, Any], sd: Dict[str, Tensor], source: str) -> Dict[str, Any]:
    """Constructor arguments for an STR-Adapter checkpoint of the original's."""
    kwargs = hparams(ckpt, sd, source, ADAPTER_DEFAULTS)
    kwargs.update(image_freeze_nlayer=12, text_freeze_nlayer=12, use_language_model=False)
    return kwargs
