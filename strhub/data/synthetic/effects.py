"""The scene-like variations of :mod:`~strhub.data.synthetic.scene` as image operations. Each takes the sample's rng
and a magnitude ``m`` in (0, 1] and is called only for a sample that has the variation."""

import io
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

_LUM = np.array([0.299, 0.587, 0.114], np.float32)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``img`` (H, W) sampled at float coordinates (zero outside)."""
    pad = np.pad(img, 1)
    x, y = np.clip(x + 1, 0, pad.shape[1] - 1.001), np.clip(y + 1, 0, pad.shape[0] - 1.001)
    x0, y0 = x.astype(int), y.astype(int)
    fx, fy = x - x0, y - y0
    top = pad[y0, x0] * (1 - fx) + pad[y0, x0 + 1] * fx
    bottom = pad[y0 + 1, x0] * (1 - fx) + pad[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _edges(x0: float, y0: float, x1: float, y1: float, n: int = 32) -> np.ndarray:
    t = np.linspace(0, 1, n)
    xs, ys = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    return np.concatenate(
        [np.c_[xs, xs * 0 + y0], np.c_[xs, xs * 0 + y1], np.c_[ys * 0 + x0, ys], np.c_[ys * 0 + x1, ys]]
    )


def curve(masks: List[Image.Image], box: Tuple, rng: np.random.Generator, m: float) -> Tuple[List[Image.Image], Tuple]:
    """Bends the text masks along a circular arc (glyphs turn with the baseline, as on logos and bottle labels in
    CUTE80) or, sometimes, a sine wave (a smooth vertical displacement); returns the masks and the new line box."""
    x0, y0, x1, y1 = box
    th, length = y1 - y0, max(x1 - x0, 1.0)
    xc, yc = (x0 + x1) / 2, (y0 + y1) / 2
    if rng.random() < 0.75:
        # Total bend up to ~140 degrees, less for long text: its arc's height (about length * angle / 8) stays
        # within 1.5 line heights, or the crop would be mostly background and the letters tiny once resized. The
        # radius stays over 1.5 line heights so that the inner side is not crushed.
        angle = m * rng.uniform(0.6, 1) * min(2.4, 12 * th / length)
        radius = max(length / angle, 1.5 * th)
        s = 1 if rng.random() < 0.6 else -1  # arched (centre below) or smiling (centre above)
        cy = yc + s * radius

        def fwd(p):
            theta, rho = (p[:, 0] - xc) / radius, radius - s * (p[:, 1] - yc)
            return np.c_[xc + rho * np.sin(theta), cy - s * rho * np.cos(theta)]

        def inv(u, v):
            dx, dy = u - xc, s * (cy - v)
            return xc + radius * np.arctan2(dx, dy), yc + s * (radius - np.hypot(dx, dy))
    else:
        amp, period, phase = m * rng.uniform(0.6, 1) * 0.3 * th, rng.uniform(2, 4) * th, rng.uniform(0, 2 * np.pi)

        def fwd(p):
            return np.c_[p[:, 0], p[:, 1] + amp * np.sin(2 * np.pi * p[:, 0] / period + phase)]

        def inv(u, v):
            return u, v - amp * np.sin(2 * np.pi * u / period + phase)

    w, h = masks[0].size
    outline = fwd(_edges(0, 0, w, h))
    lo = np.floor(outline.min(0)) - 1
    size = (int(np.ceil(outline[:, 0].max() - lo[0])) + 2, int(np.ceil(outline[:, 1].max() - lo[1])) + 2)
    v, u = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float64)
    sx, sy = inv(u + lo[0], v + lo[1])
    out = [
        Image.fromarray(np.clip(_bilinear(np.asarray(k, np.float64), sx, sy), 0, 255).astype(np.uint8)) for k in masks
    ]
    line = fwd(_edges(x0, y0, x1, y1)) - lo
    return out, (*line.min(0), *line.max(0))


def tilt(
    rng: np.random.Generator,
    m: float,
    centre: np.ndarray,
    length: float,
    th: float,
    points: Optional[np.ndarray] = None,
) -> np.ndarray:
    """A 3x3 homography about ``centre``: the text plane turned away from the camera (yaw, pitch) and rolled in the
    image plane, as SVTP's side views (``length``, ``th``: the text line's size); less roll for long text, whose crop
    would otherwise be mostly background. ``points`` (N, 2), e.g. the corners of the canvas being warped, stay in front
    of the camera: the focal length grows where one would come within a quarter of it (short words on wide margins,
    turned far), which would otherwise magnify it without bound (an image of gigabytes) or mirror it."""
    yaw, pitch = np.deg2rad(rng.uniform(-1, 1) * 55 * m), np.deg2rad(rng.uniform(-1, 1) * 25 * m)
    roll = np.deg2rad(rng.uniform(-1, 1) * 20 * m * min(1.0, 4 * th / max(length, 1)) ** 0.5)
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rot = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rot = rot @ np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    f = rng.uniform(1.2, 2) * max(length, th)  # focal length: nearer (stronger foreshortening) for a smaller f
    if points is not None:  # depth of a point: f + rot[2, :2] . (p - centre) >= f / 4
        f = max(f, -4 / 3 * float(np.min((points - centre) @ rot[2, :2])))
    proj = np.diag([f, f, 1.0]) @ np.c_[rot[:, :2], [0, 0, f]]
    shift = np.array([[1, 0, centre[0]], [0, 1, centre[1]], [0, 0, 1]])
    unshift = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1]])
    return shift @ proj @ unshift


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def occlude(img: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, m: float, bg: np.ndarray) -> np.ndarray:
    """Strokes, a small shape or a band over the letters (HOST/WOST-like), in a random or the background colour,
    placed and sized by the text's rows in ``alpha`` (H, W, 1) so that every letter keeps most of its strokes."""
    h, w = img.shape[:2]
    rows = np.flatnonzero(alpha[..., 0].max(1) > 0.5)
    top, bottom = (rows[0], rows[-1] + 1) if len(rows) else (0, h)
    th = bottom - top
    layer = Image.new('L', (w, h))
    draw = ImageDraw.Draw(layer)
    kind = rng.choice(3, p=[0.45, 0.35, 0.2])
    if kind == 0:  # scratches, wires, twigs across the word
        for _ in range(int(rng.integers(1, 2 + round(2 * m)))):
            ya, yb = top + rng.uniform(0.1, 0.9, 2) * th
            width = max(1, int(round(th * rng.uniform(0.04, 0.04 + 0.06 * m))))
            draw.line([(rng.uniform(-0.1, 0.4) * w, ya), (rng.uniform(0.6, 1.1) * w, yb)], fill=255, width=width)
    elif kind == 1:  # a blob (a leaf, a sticker, a rivet) or a thin pole, smaller than a letter
        x, y = rng.uniform(0.05, 0.95) * w, top + rng.uniform(0, 1) * th
        if rng.random() < 0.6:
            r = rng.uniform(0.1, 0.1 + 0.12 * m) * th
            draw.ellipse([x - r, y - r * rng.uniform(0.6, 1.4), x + r, y + r * rng.uniform(0.6, 1.4)], fill=255)
        else:
            r = rng.uniform(0.03, 0.03 + 0.05 * m) * th
            draw.rectangle([x - r, 0, x + r, h], fill=255)
    else:  # the top or the bottom of the word hidden, as in HOST
        cut = rng.uniform(0.08, 0.08 + 0.12 * m) * th
        draw.rectangle([0, 0, w, top + cut] if rng.random() < 0.5 else [0, bottom - cut, w, h], fill=255)
    colour = bg if rng.random() < 0.4 else _random_colour(rng)
    cover = np.asarray(layer.filter(ImageFilter.GaussianBlur(0.5)), np.float32)[..., None] / 255
    return img * (1 - cover) + colour * cover


def _fbm(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Fractal noise in about [-1, 1], shape (h, w): octaves of upsampled random grids."""
    out = np.zeros((h, w), np.float32)
    cell, amp = max(h, w) / rng.uniform(1.5, 4), 1.0
    while cell >= 2:
        gh, gw = int(h / cell) + 2, int(w / cell) + 2
        grid = Image.fromarray(rng.integers(0, 256, (gh, gw), dtype=np.uint8))
        out += amp * (np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC), np.float32) / 127.5 - 1)
        cell, amp = cell / 2, amp * 0.55
    return out / max(float(np.abs(out).max()), 1e-6)


def _pattern(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A procedural texture in [-1, 1], shape (h, w): fractal noise, bricks/tiles, wood grain or bokeh."""
    kind = rng.choice(4)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        return _fbm(rng, h, w)
    if kind == 1:  # bricks or tiles: dark mortar lines
        bh = rng.uniform(0.3, 0.8) * h
        bw = bh * rng.uniform(1, 3)
        row = np.floor(y / bh)
        xs = x + (row % 2) * bw / 2 * (rng.random() < 0.7)
        mortar = (np.minimum(y % bh, (xs % bw)) < max(1.0, 0.08 * bh)).astype(np.float32)
        return np.clip(0.4 * _fbm(rng, h, w) + 0.3 - 1.3 * mortar, -1, 1)
    if kind == 2:  # wood grain / brushed metal: stripes bent by noise
        a = rng.uniform(0, np.pi)
        t = (np.cos(a) * x + np.sin(a) * y) / rng.uniform(3, 12) + 3 * _fbm(rng, h, w)
        return np.sin(t)
    layer = Image.new('L', (w, h))  # bokeh: blurred discs of light, as out-of-focus street lights
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(4, 16))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.6) * h
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=int(rng.integers(80, 256)))
    blurred = layer.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3)))
    return np.asarray(blurred, np.float32) / 127.5 - 1


def texture(rng: np.random.Generator, h: int, w: int, m: float, contrast: float) -> np.ndarray:
    """A photo-like background to add to the flat one, shape (h, w, 3): a procedural pattern with a free hue
    (colours of a ramp between two random colours) and a luminance swing bounded by ``m * 0.4 * contrast``, so the
    text keeps at least 60% of its contrast wherever it lies."""
    pattern = _pattern(rng, h, w)[..., None]
    a, b = _random_colour(rng), _random_colour(rng)
    colour = (a + (b - a) * (pattern + 1) / 2) * m
    chroma = colour - (colour @ _LUM)[..., None]  # zero luminance: changes the hue only
    return chroma + m * 0.4 * contrast * pattern


def light_on_dark(rng: np.random.Generator, bg: np.ndarray, fg: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(background, text) colours for light text on a dark ground: night signs, LEDs, backlit panels."""
    dark = (bg * rng.uniform(0.03, 0.3)).astype(np.float32)
    light = 255 - (255 - np.maximum(fg, bg)) * rng.uniform(0, 0.35)
    if rng.random() < 0.5:  # a saturated neon colour
        light = light * rng.uniform(0.35, 1, 3)
        light *= 230 / max(float(light.max()), 1)
    lum = float(light @ _LUM)
    if lum < 150:  # deep blue or red neon reads poorly on black: towards white, to a luminance of 150
        light = light + (255 - light) * (150 - lum) / (255 - lum)
    return dark, light.astype(np.float32)


def glow(img: np.ndarray, alpha: np.ndarray, fill: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft halo of the text colour around the letters (neon, backlit signs)."""
    h = img.shape[0]
    mask = Image.fromarray((alpha[..., 0] * 255).astype(np.uint8))
    halo = np.asarray(mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.05, 0.15) * h)), np.float32)[..., None]
    k = rng.uniform(0.4, 0.9) * halo / max(float(halo.max()), 1)
    return img * (1 - k) + fill * k


def lowres(image: Image.Image, rng: np.random.Generator, m: float, text_h: Optional[float] = None) -> Image.Image:
    """Shrinks the crop (the text down to a few pixels high) and scales it back up, blocky or smooth. ``text_h``: the
    height of a tight crop of the text at this scale (default: the image's)."""
    w, h = image.size
    text_h = text_h or h
    small_text = text_h - m * (text_h - rng.uniform(9, 16))  # at full strength 9-16 px, whatever the crop's height
    # text_h == h: the arithmetic of datasets made before text_h existed, so that their images stay byte-identical
    small_h = small_text if text_h == h else h * small_text / text_h
    small = image.resize((max(4, round(w * small_h / h)), max(4, round(small_h))), Image.Resampling.BOX)
    resample = (Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)[rng.choice(3)]
    return small.resize((w, h), resample)


def _shifted_mean(img: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Mean of ``img`` (H, W, C) shifted by integer ``offsets`` (N, 2: dx, dy), edges repeated."""
    r = int(np.abs(offsets).max())
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode='edge')
    h, w = img.shape[:2]
    return sum(pad[r + dy : r + dy + h, r + dx : r + dx + w] for dx, dy in offsets) / len(offsets)


def blur(image: Image.Image, rng: np.random.Generator, m: float, text_h: Optional[float] = None) -> Image.Image:
    """Motion blur (a line kernel at a random angle, mostly horizontal) or defocus blur (a disc kernel), sized by
    ``text_h``, the height of a tight crop of the text (default: the image's)."""
    img = np.asarray(image, np.float32)
    h = text_h or img.shape[0]
    if rng.random() < 0.6:
        length = max(2.0, m * rng.uniform(0.5, 1) * 0.12 * h)
        a = np.deg2rad(rng.normal(0, 30))
        t = np.linspace(-length / 2, length / 2, int(np.ceil(length)) + 1)
        offsets = np.unique(np.round(np.c_[t * np.cos(a), t * np.sin(a)]).astype(int), axis=0)
    else:
        r = max(1.0, m * rng.uniform(0.5, 1) * 0.06 * h)
        g = np.arange(-int(r), int(r) + 1)
        offsets = np.array([(dx, dy) for dx in g for dy in g if dx * dx + dy * dy <= r * r + 0.5])
    return Image.fromarray(np.clip(_shifted_mean(img, offsets) + 0.5, 0, 255).astype(np.uint8), 'RGB')


def jpeg(image: Image.Image, rng: np.random.Generator, m: float, text_h: Optional[float] = None) -> Image.Image:
    """A JPEG round trip at a low quality (blocks, ringing, colour bleeding), whatever the final encoding and the
    text's size (``text_h``, taken as the other effects take it)."""
    buf = io.BytesIO()
    image.save(buf, format='JPEG', quality=int(round(95 - 85 * m)))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert('RGB')
