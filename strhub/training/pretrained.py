"""Starting a run from a checkpoint's weights (``pretrained=CKPT``), as fine-tuning does.

The checkpoint is read once, before the data is indexed. Model keys the config leaves null take the checkpoint's
values, so ``configs/experiment/finetune.yaml`` needs no architecture: the CLIP shape, image size, charset, label
length, decoders and freezing come from the checkpoint unless the command line sets them (``model.charset_train=``,
``model.img_size=``, ``model.max_label_length=`` change them). ``model.lr=null`` is the checkpoint's learning rate
times ``pretrained_lr_scale``, and ``data.openai_meanstd=null`` the normalisation the checkpoint was trained with
(so that the network sees the images as it learnt them: the shipped clip4str-tiny 0.5/0.5, the original's releases the
OpenAI CLIP statistics). The weights are then mapped onto the model built from that config
(:func:`strhub.models.transfer.transfer_weights`: new characters, positions and patch grids).
"""

from dataclasses import dataclass
from typing import Any, Dict, List

from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from strhub.models.checkpoint import read_checkpoint, system_of, trained_with_openai_meanstd
from strhub.models.serialization import WeightsMismatchError
from strhub.models.transfer import transfer_weights
from .checks import TrainingSetupError, checked_value

__all__ = ['Pretrained', 'fill_from_checkpoint', 'load_pretrained', 'read_pretrained']

# Null model keys that stay null: a pretrained run takes its weights from the checkpoint, not from a CLIP file.
_NOT_FROM_CHECKPOINT = ('clip_pretrained', 'clip_trusted', 'pos_embed_init', 'seed')


@dataclass
class Pretrained:
    source: str
    weights: Dict[str, Tensor]  # our key names
    hparams: Dict[str, Any]  # the constructor arguments of the model it holds
    openai_meanstd: bool  # its training normalisation


def read_pretrained(config: DictConfig) -> Pretrained:
    """Reads ``config.pretrained`` (a file or a shipped model's name) and its resolved hyper-parameters (a release
    without any gets them from its weights, see :mod:`strhub.models.clip4str.loading`)."""
    source = str(config.pretrained)
    ckpt = read_checkpoint(source, trust=config.trust_checkpoint)
    system, weights = system_of(ckpt, source)
    hparams = system.hparams(ckpt, weights, source)
    return Pretrained(source, weights, hparams, trained_with_openai_meanstd(ckpt, source))


def fill_from_checkpoint(config: DictConfig, pretrained: Pretrained) -> List[str]:
    """Sets the null ``model.*`` keys of ``config``, and a null ``data.openai_meanstd``, to the checkpoint's values;
    returns ``key=value`` per key set."""
    scale = checked_value('pretrained_lr_scale', config.pretrained_lr_scale)
    filled = []
    with open_dict(config):
        for key in list(config.model):
            if (
                key in _NOT_FROM_CHECKPOINT
                or OmegaConf.is_interpolation(config.model, key)  # follows the key it names
                or config.model[key] is not None
                or pretrained.hparams.get(key) is None
            ):
                continue
            value = pretrained.hparams[key]
            if key == 'lr':
                value *= scale
            config.model[key] = value
            filled.append(f'model.{key}={value!r}' + (f" (the checkpoint's x {scale:g})" if key == 'lr' else ''))
        if 'data' in config and config.data.get('openai_meanstd', False) is None:
            config.data.openai_meanstd = pretrained.openai_meanstd
            filled.append(f'data.openai_meanstd={pretrained.openai_meanstd} (its training normalisation)')
    return filled


def load_pretrained(model: nn.Module, pretrained: Pretrained) -> List[str]:
    """Maps the checkpoint's weights onto ``model``; returns the report of what was mapped.

    Raises:
        TrainingSetupError: a tensor that cannot be mapped (naming it and both shapes).
    """
    try:
        return transfer_weights(model, pretrained.weights, pretrained.hparams, pretrained.source)
    except WeightsMismatchError as e:
        raise TrainingSetupError(f'pretrained={e}') from None
