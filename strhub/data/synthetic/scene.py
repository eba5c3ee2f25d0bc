"""Scene-like variations of the synthetic dataset (curved text, perspective, occlusion, backgrounds, light-on-dark,
low resolution, blur, JPEG, letter spacing, loose crops, capitals, codes, long words), their strengths and the test
sets that measure each: what the real benchmarks (CUTE80, SVTP, IC15, HOST/WOST) stress and clean renders do not."""

from dataclasses import dataclass, field, fields
from typing import Dict, Mapping, Optional

import numpy as np

IMAGE_VARIATIONS = ('curve', 'perspective', 'occlusion', 'background', 'lowres', 'blur', 'jpeg', 'spacing', 'loose')
CHANCE_VARIATIONS = ('dark', 'caps', 'codes', 'long')  # a sample has them or not: the strength is a probability
VARIATIONS = IMAGE_VARIATIONS + CHANCE_VARIATIONS  # the names a strength, or a share of its own, is given for
# Added after datasets were made with SceneOptions.uniform (the shipped model's among them): left out of it unless
# given a share of their own, so that the commands that made those datasets make them again, byte for byte.
LATER_VARIATIONS = ('loose',)


@dataclass(frozen=True)
class SceneOptions:
    """Strengths 0..1 of the scene-like variations; 0 turns one off, 1 is the strongest that stayed readable by eye.

    An image variation (``IMAGE_VARIATIONS``) is applied to a sample with probability ``share``, at a magnitude
    drawn from ``strength * U(0.4, 1)``; the others (light text on a dark background, all-caps or mixed-case words,
    alphanumeric codes, words of 12-15 characters) with probability ``share * strength``. ``shares`` gives some
    variations a share of their own (a training mix weighted to the hardest ones). A variation of strength 0 draws
    nothing from the sample's rng, so that with all strengths 0 every sample is the one rendered without them; the
    shares change which samples have a variation, not the draws.
    """

    curve: float = 0.0
    perspective: float = 0.0
    occlusion: float = 0.0
    background: float = 0.0
    lowres: float = 0.0
    blur: float = 0.0
    jpeg: float = 0.0
    spacing: float = 0.0
    loose: float = 0.0
    dark: float = 0.0
    caps: float = 0.0
    codes: float = 0.0
    long: float = 0.0
    share: float = 1.0
    shares: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != 'shares'}
        bad = {k: v for k, v in {**values, **self.shares}.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f'scene strengths and shares must be within 0..1, got {bad}')
        unknown = sorted(set(self.shares) - set(VARIATIONS))
        if unknown:
            raise ValueError(f'no scene variation {unknown}: one of {", ".join(VARIATIONS)}')

    @classmethod
    def uniform(
        cls, strength: float, share: float = 0.25, shares: Optional[Mapping[str, float]] = None
    ) -> 'SceneOptions':
        """Every variation at ``strength``, each applied to a ``share`` of the samples (or its own, ``shares``);
        ``LATER_VARIATIONS`` only when ``shares`` names them."""
        shares = dict(shares or {})
        on = [v for v in VARIATIONS if v not in LATER_VARIATIONS or v in shares]
        return cls(**dict.fromkeys(on, strength), share=share, shares=shares)

    def share_of(self, name: str) -> float:
        return self.shares.get(name, self.share)

    def magnitude(self, name: str, rng: np.random.Generator) -> float:
        """The magnitude of image variation ``name`` for one sample: 0 (not applied) or up to its strength."""
        strength = getattr(self, name)
        if strength <= 0 or rng.random() >= self.share_of(name):
            return 0.0
        return strength * rng.uniform(0.4, 1)

    def chance(self, name: str, rng: np.random.Generator) -> bool:
        """Whether one sample has variation ``name`` of ``CHANCE_VARIATIONS``."""
        strength = getattr(self, name)
        return strength > 0 and rng.random() < self.share_of(name) * strength

    def label_kind(self, rng: np.random.Generator) -> Optional[str]:
        """'codes', 'long', 'caps' or None (an ordinary label); codes and long words win over capitals."""
        return next((k for k in ('codes', 'long', 'caps') if self.chance(k, rng)), None)


# One test set per variation at full strength, and a mix. Labels are held-out words (codes: random); the even samples
# use the training font families and the odd ones the held-out families, so each set measures both (see build.py).
SCENE_TESTS: Dict[str, SceneOptions] = {
    'SynthScene/curved': SceneOptions(curve=1),
    'SynthScene/perspective': SceneOptions(perspective=1),
    'SynthScene/occluded': SceneOptions(occlusion=1),
    'SynthScene/background': SceneOptions(background=1),
    'SynthScene/dark': SceneOptions(dark=1),
    'SynthScene/lowres': SceneOptions(lowres=1, jpeg=0.5),  # small, then up-scaled and compressed, as IC15 crops
    'SynthScene/blur': SceneOptions(blur=1),
    'SynthScene/spacing': SceneOptions(spacing=1),
    'SynthScene/caps': SceneOptions(caps=1),
    'SynthScene/codes': SceneOptions(codes=1),
    'SynthScene/long': SceneOptions(long=1),
    'SynthScene/loose': SceneOptions(loose=1),  # the word small, anywhere on a wider canvas
    # Every variation, a quarter of the samples each (two or three per image), a little weaker than alone: stacked
    # at full strength they made some words unreadable. Without LATER_VARIATIONS, so that the set stays the one
    # earlier models were measured on.
    'SynthScene/mixed': SceneOptions(
        **{v: 0.8 for v in IMAGE_VARIATIONS if v not in LATER_VARIATIONS},
        dark=1,
        caps=1,
        codes=0.5,
        long=0.5,
        share=0.25,
    ),
}
