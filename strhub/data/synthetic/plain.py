"""A second, plain renderer for the test set ``SynthPlain``: text as a user's own crops or another generator would draw
it (Pillow's ``ImageDraw.text``, left-aligned with room to spare, on a flat light background, no effects), so that a
model trained on :mod:`~strhub.data.synthetic.render`'s images is also measured outside that renderer's style."""

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from strhub.data.synthetic.fonts import FontSpec, load_font


def render_plain(label: str, rng: np.random.Generator, fonts: Sequence[FontSpec]) -> Image.Image:
    """``label`` in dark ink on a flat light background, one of ``fonts`` at 14-32 px, starting 1-10 px from the left
    edge, vertically centred in a crop 1.3-2 times the font size high and up to one height wider than the text."""
    spec = fonts[int(rng.integers(len(fonts)))]
    font = load_font(spec.path, int(rng.integers(14, 33)))
    height = int(font.size * rng.uniform(1.3, 2.0))
    left = int(rng.integers(1, 11))
    width = left + int(np.ceil(font.getlength(label))) + int(rng.integers(2, height + 1))
    image = Image.new('RGB', (width, height), tuple(int(v) for v in rng.integers(190, 256, 3)))
    ink = tuple(int(v) for v in rng.integers(0, 71, 3))
    ImageDraw.Draw(image).text((left, height / 2), label, font=font, fill=ink, anchor='lm')
    return image
