"""Training augmentation: PARSeq/CLIP4STR's RandAugment variant (spec §3.5) on timm 1.x ``auto_augment``.

Differences from the original, all deliberate:
- The original patched timm's module-level ``NAME_TO_OP`` / ``LEVEL_TO_ARG`` at import (and timm 1.x now has its
  own, different ``GaussianBlur``). We keep private op tables and leave timm untouched; the ops are still timm
  ``AugmentOp`` / ``RandAugment`` objects, so the RNG calls (python ``random`` for the 0.5 application
  probability, the sign and the resampling filter; ``numpy.random`` for choosing ops) are the same.
- ``PoissonNoise`` is a NumPy port of imgaug 0.4's ``AdditivePoissonNoise(lam)`` (imgaug does not run on NumPy 2).
  It draws from the global ``numpy.random`` state (imgaug used its own RNG), so it follows the worker seeding.
- ``MotionBlur`` and ``GaussianNoise`` are defined in the original but not in its op pool; they are omitted.
"""

from functools import lru_cache, partial
from typing import Callable, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageFilter
from timm.data import auto_augment
from timm.data.auto_augment import _LEVEL_DENOM, LEVEL_TO_ARG, NAME_TO_OP, AugmentOp, RandAugment, _randomly_negate

# timm's _RAND_INCREASING_TRANSFORMS minus SharpnessIncreasing (interferes with the blur op), plus GaussianBlur and
# PoissonNoise, in the original's order. Spelled out so that a timm change cannot alter the pool or its order (the
# order matters for reproducing numpy's op choice).
RAND_TRANSFORMS = (
    'AutoContrast',
    'Equalize',
    'Invert',
    'Rotate',
    'PosterizeIncreasing',
    'SolarizeIncreasing',
    'SolarizeAdd',
    'ColorIncreasing',
    'ContrastIncreasing',
    'BrightnessIncreasing',
    'ShearX',
    'ShearY',
    'TranslateXRel',
    'TranslateYRel',
    'GaussianBlur',
    'PoissonNoise',
)

# Tuned for magnitude 5: the effective values are half of these (e.g. rotation ±15°).
HPARAMS = {
    'rotate_deg': 30,
    'shear_x_pct': 0.9,
    'shear_y_pct': 0.2,
    'translate_x_pct': 0.10,
    'translate_y_pct': 0.30,
}


def rotate_expand(img: Image.Image, degrees: float, **kwargs) -> Image.Image:
    """timm's rotate with ``expand=True``, so that characters are not cut off at the corners."""
    kwargs['expand'] = True
    return auto_augment.rotate(img, degrees, **kwargs)


def _clamp_to_size(level: float, img: Image.Image, max_dim_factor: float, min_level: int = 1) -> int:
    """Caps an op parameter relative to the image size (small images get weaker blur/noise)."""
    max_level = max(min_level, max_dim_factor * max(img.size))
    return round(min(level, max_level))


@lru_cache(maxsize=None)
def _gaussian_blur_filter(radius: int) -> ImageFilter.GaussianBlur:
    return ImageFilter.GaussianBlur(radius)


def gaussian_blur(img: Image.Image, radius: float, **_) -> Image.Image:
    """Gaussian blur, nominal radius 2.0 at magnitude 5, ``round(min(r, max(1, 0.02 * max(w, h))))``."""
    return img.filter(_gaussian_blur_filter(_clamp_to_size(radius, img, 0.02)))


def additive_poisson_noise(img: Image.Image, lam: int) -> Image.Image:
    """imgaug ``AdditivePoissonNoise(lam)`` with its defaults (``per_channel=False``).

    Adds to every pixel a Poisson(lam) value whose sign is flipped with probability 0.5; the value is shared by all
    channels of the pixel. The result is clipped to uint8.
    """
    x = np.asarray(img)
    noise = np.random.poisson(lam, size=x.shape[:2]).astype(np.int16)
    noise *= np.where(np.random.random(size=x.shape[:2]) < 0.5, -1, 1).astype(np.int16)
    if x.ndim == 3:
        noise = noise[..., None]
    return Image.fromarray(np.clip(x.astype(np.int16) + noise, 0, 255).astype(np.uint8))


def poisson_noise(img: Image.Image, lam: float, **_) -> Image.Image:
    """Poisson noise, nominal lam 20 at magnitude 5, ``round(min(lam, max(1, 0.2 * max(w, h)))) | 1`` (odd)."""
    return additive_poisson_noise(img, _clamp_to_size(lam, img, 0.2) | 1)


def _level_to_arg(level: float, _hparams: Dict, max: float) -> Tuple[float]:
    return (max * level / _LEVEL_DENOM,)


def _signed_level_to_arg(level: float, hparams: Dict, key: str) -> Tuple[float]:
    level = (level / _LEVEL_DENOM) * hparams[key]  # hparams: a copy of HPARAMS (AugmentOp keeps one)
    return (_randomly_negate(level),)


_NAME_TO_OP: Dict[str, Callable] = {
    **NAME_TO_OP,
    'Rotate': rotate_expand,
    'GaussianBlur': gaussian_blur,
    'PoissonNoise': poisson_noise,
}
_LEVEL_TO_ARG: Dict[str, Callable] = {
    **LEVEL_TO_ARG,
    'Rotate': partial(_signed_level_to_arg, key='rotate_deg'),
    'ShearX': partial(_signed_level_to_arg, key='shear_x_pct'),
    'ShearY': partial(_signed_level_to_arg, key='shear_y_pct'),
    'TranslateXRel': partial(_signed_level_to_arg, key='translate_x_pct'),
    'TranslateYRel': partial(_signed_level_to_arg, key='translate_y_pct'),
    'GaussianBlur': partial(_level_to_arg, max=4),
    'PoissonNoise': partial(_level_to_arg, max=40),
}


def _augment_op(name: str, prob: float, magnitude: float, hparams: Dict) -> AugmentOp:
    # AugmentOp looks its functions up in timm's global tables; build it with any timm name, then swap in ours.
    op = AugmentOp('AutoContrast', prob=prob, magnitude=magnitude, hparams=hparams)
    op.name, op.aug_fn, op.level_fn = name, _NAME_TO_OP[name], _LEVEL_TO_ARG[name]
    return op


def rand_augment_ops(magnitude: float = 5, prob: float = 0.5) -> List[AugmentOp]:
    """The 16 ops of the pool, each applied with probability ``prob`` at a fixed ``magnitude`` (of 10)."""
    return [_augment_op(name, prob, magnitude, HPARAMS) for name in RAND_TRANSFORMS]


def rand_augment_transform(magnitude: float = 5, num_layers: int = 3) -> RandAugment:
    """RandAugment over PIL images: ``num_layers`` distinct ops per image, each applied with probability 0.5.

    Args:
        magnitude: op strength on timm's 0..10 scale (no magnitude noise).
        num_layers: number of ops sampled per image.

    Returns:
        A callable PIL image -> PIL image (the size may change: Rotate expands the canvas).
    """
    ops = rand_augment_ops(magnitude)
    # Explicit uniform weights make timm sample *without* replacement, so an op is never picked twice.
    choice_weights = [1.0 / len(ops)] * len(ops)
    return RandAugment(ops, num_layers, choice_weights)
