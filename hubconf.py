"""torch.hub entry points: one per model of ``strhub.pretrained.CHECKPOINTS`` (``torch.hub.list``), named as there
with ``_`` (``clip4str_base16x16``, ``clip4str_tiny``). Nothing is downloaded: a release is read from
``$CLIP4STR_CHECKPOINTS`` (or the working directory) under its released file name, or from ``checkpoint=PATH``.

    import torch
    model = torch.hub.load('path/to/this/repo', 'clip4str_base16x16', source='local')
    texts, probs = model.tokenizer.decode(model(images).softmax(-1))
"""

from pathlib import Path as _Path
from typing import Optional as _Optional

from strhub.pretrained import CHECKPOINTS as _CHECKPOINTS, ENV_VAR as _ENV_VAR

# Modules (torch.hub checks that they import); hydra only for pretrained=False.
dependencies = ['torch', 'torchvision', 'pytorch_lightning', 'open_clip', 'timm', 'PIL', 'hydra']

_CONFIGS = _Path(__file__).resolve().parent / 'configs'


def _random_model(experiment: str, **kwargs):
    # What torch.hub users expect of pretrained=False: the architecture, randomly initialised (the CLIP towers too).
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(_CONFIGS), version_base='1.2'):
        config = compose('main', [f'+experiment={experiment}', 'model.clip_pretrained=null'])
    return instantiate(config.model, **kwargs).eval()


def _entry_point(name: str):
    ckpt = _CHECKPOINTS[name]
    entry = name.replace('-', '_')
    where = 'shipped in strhub/pretrained/' if ckpt.shipped else f'{ckpt.file}, from ${_ENV_VAR} or the working dir'

    def load(pretrained: bool = True, checkpoint: _Optional[str] = None, trust: bool = False, **kwargs):
        if not pretrained:
            if checkpoint is not None:
                raise ValueError(f'{entry}: checkpoint={checkpoint!r} is for pretrained=True')
            return _random_model(ckpt.experiment, **kwargs)
        from strhub.models import load_from_checkpoint

        return load_from_checkpoint(name if checkpoint is None else checkpoint, trust=trust, **kwargs)

    load.__name__ = load.__qualname__ = entry
    load.__doc__ = f"""{ckpt.about}.

    Args:
        pretrained: True: the weights ({where}).
            False: the architecture of configs/experiment/{ckpt.experiment}.yaml, randomly initialised.
        checkpoint: a file to load instead (e.g. a fine-tuned copy), or a model's name.
        trust: load a checkpoint that pickles objects beyond tensors and plain data (can run code).
        **kwargs: constructor arguments to override, e.g. refine_iters=0, decode_ar=False, charset_test='...'.

    Returns:
        The model in eval mode: model(images) gives logits (N, T, C); model.tokenizer.decode(logits.softmax(-1))
        the texts and per-character probabilities.
    """
    return load


# Defined from the registry so that every loadable name has its entry point and none is listed twice.
for _name in _CHECKPOINTS:
    globals()[_name.replace('-', '_')] = _entry_point(_name)
