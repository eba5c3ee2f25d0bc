"""Rendering of the synthetic dataset: a word as a cropped scene-text-like image (colours, background texture,
outline and shadow, geometric warp, blur, low resolution, noise, and the scene-like variations of
:mod:`~strhub.data.synthetic.scene`), and its encoding."""

import io
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from strhub.data.synthetic import effects
from strhub.data.synthetic.fonts import FontSpec, load_font
from strhub.data.synthetic.scene import SceneOptions

RENDER_SIZES = (24, 28, 32, 36, 40, 48)  # font px before the final resize; a few sizes keep the font cache small
MAX_WIDTH = 1600  # output width cap in px (very long text is squeezed)


def _lum(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _colors(rng: np.random.Generator, min_contrast: float) -> Tuple[np.ndarray, np.ndarray]:
    """(background, text) RGB colours whose luminances differ by at least ``min_contrast`` (0..1)."""
    if rng.random() < 0.35:  # much real text is near-black/white on grey-ish
        pairs = rng.uniform(0, 255, (32, 2, 1)) + rng.uniform(-12, 12, (32, 2, 3))
    else:
        pairs = rng.uniform(0, 255, (32, 2, 3))
    pairs = np.clip(pairs, 0, 255).astype(np.float32)
    lum = pairs @ np.array([0.299, 0.587, 0.114], np.float32)
    ok = np.flatnonzero(np.abs(lum[:, 0] - lum[:, 1]) >= min_contrast * 255)
    bg = pairs[ok[0] if len(ok) else 0, 0]
    fg = pairs[ok[0], 1] if len(ok) else np.full(3, 0 if _lum(bg) > 127 else 255, np.float32)
    return bg, fg


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], shape (h, w, 1): a small random grid, upsampled."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = Image.fromarray(rng.integers(0, 256, (gh, gw), dtype=np.uint8))
    return np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC), np.float32)[..., None] / 127.5 - 1


def _ramp(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A linear ramp in [-1, 1] along a random direction, shape (h, w, 1)."""
    a = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.cos(a) * x / max(w, 1) + np.sin(a) * y / max(h, 1)
    return (2 * (t - t.min()) / max(float(np.ptp(t)), 1e-6) - 1)[..., None]


def _background(rng: np.random.Generator, h: int, w: int, base: np.ndarray, amp: float) -> np.ndarray:
    """A textured background around ``base`` whose variation stays within ``amp`` (so contrast is kept)."""
    bg = np.broadcast_to(base.astype(np.float32), (h, w, 3)).copy()
    kind = rng.choice(5, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    tint = rng.uniform(0.5, 1, 3).astype(np.float32)  # per-channel, so textures may shift the hue a little
    if kind == 1:
        bg += amp * tint * _ramp(rng, h, w)
    elif kind == 2:
        bg += amp * tint * _smooth_noise(rng, h, w, int(rng.integers(4, 24)))
    elif kind in (3, 4):
        layer = Image.new('L', (w, h))
        draw = ImageDraw.Draw(layer)
        for _ in range(int(rng.integers(2, 9))):
            x0, x1 = rng.uniform(-0.2, 1.2, 2) * w
            y0, y1 = rng.uniform(-0.2, 1.2, 2) * h
            v = int(rng.integers(128, 256))
            if kind == 3:
                draw.line([(x0, y0), (x1, y1)], fill=v, width=int(rng.integers(1, max(2, h // 10))))
            else:
                draw.ellipse([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=v)
        sign = 1 if rng.random() < 0.5 else -1
        bg += sign * amp * tint * np.asarray(layer, np.float32)[..., None] / 255
    if rng.random() < 0.5:  # fine grain, as on paper or concrete
        bg += rng.normal(0, 0.15 * amp + 1, (h, w, 1)).astype(np.float32)
    return bg


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 projective map sending the 4 points ``src`` to ``dst``."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    return np.append(np.linalg.solve(np.array(a, float), np.array(b, float)), 1).reshape(3, 3)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ m.T
    return p[:, :2] / p[:, 2:]


def _draw_text(text: str, font: ImageFont.FreeTypeFont, stroke: int, spacing: float) -> Tuple[List[Image.Image], Tuple]:
    """Text masks (fill, and outline if ``stroke``) on a canvas with margins, and the line box in canvas coordinates
    (x0, y0, x1, y1): cap height to descender, so that crops do not depend on the letters' heights."""
    advances = [font.getlength(c) + spacing for c in text] if spacing else [font.getlength(text)]
    width = sum(advances) - (spacing if spacing else 0)
    _, top, _, bottom = font.getbbox('Hg', anchor='ls')
    size = font.size
    margin = size // 2 + stroke
    w, h = int(width + 2 * margin + 1), int(bottom - top + 2 * margin + 1)
    ox, oy = margin, margin - top  # pen origin: left end of the baseline
    masks = []
    for sw in [0, stroke] if stroke else [0]:
        img = Image.new('L', (w, h))
        draw = ImageDraw.Draw(img)
        if spacing:  # tracking: character by character, dropping kerning
            x = ox
            for c, adv in zip(text, advances):
                draw.text((x, oy), c, font=font, fill=255, anchor='ls', stroke_width=sw, stroke_fill=255)
                x += adv
        else:
            draw.text((ox, oy), text, font=font, fill=255, anchor='ls', stroke_width=sw, stroke_fill=255)
        masks.append(img)
    return masks, (ox, oy + top - stroke, ox + width, oy + bottom + stroke)


def _warp(
    masks: List[Image.Image], box: Tuple, rng: np.random.Generator, d: float, tilt: float = 0.0
) -> Tuple[List[Image.Image], Tuple]:
    """Rotation, shear, horizontal stretch and a perspective jitter of the corners, then (``tilt`` > 0) a 3D turn of
    the text plane (:func:`effects.tilt`), applied to all masks alike in one resampling."""
    w, h = masks[0].size
    x0, y0, x1, y1 = box
    th = y1 - y0
    ang = np.deg2rad(rng.uniform(-1, 1) * 12 * d * min(1.0, 4 * th / max(x1 - x0, 1)) ** 0.5)  # long words: less
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    shear = np.array([[1, rng.uniform(-0.5, 0.5) * d], [0, 1]])
    stretch = np.diag([np.exp(rng.uniform(-0.4, 0.4) * d), 1])
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    c = np.array([w / 2, h / 2])
    dst = (src - c) @ (rot @ shear @ stretch).T + c + rng.uniform(-0.35, 0.35, (4, 2)) * d * th
    if tilt > 0:
        dst = _apply(effects.tilt(rng, tilt, c, x1 - x0, th, dst), dst)
    dst -= dst.min(0)
    fwd = _homography(src, dst)
    inv = np.linalg.inv(fwd)
    coeffs = tuple((inv / inv[2, 2]).flatten()[:8])
    size = tuple(int(np.ceil(v)) + 1 for v in dst.max(0))
    out = [m.transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR) for m in masks]
    corners = _apply(fwd, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float))
    return out, (*corners.min(0), *corners.max(0))


def _loose_margins(pad: np.ndarray, box: Tuple, rng: np.random.Generator, m: float) -> np.ndarray:
    """Margins of a loose crop (a fixed-size canvas, a generous detector box): the line box down to about a third of
    the crop's height at ``m`` = 1, the crop up to 5 times as wide as high, and the word anywhere in it."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    pad = pad.copy()
    tall = rng.uniform(0.5, 2) * m * bh
    top = rng.uniform() * tall
    pad[1], pad[3] = pad[1] + top, pad[3] + tall - top
    h, w = bh + pad[1] + pad[3], bw + pad[0] + pad[2]
    wide = max(h * rng.uniform(2.5, 2.5 + 2.5 * m) - w, 0) + rng.uniform(0, 2 * m) * bh
    left = rng.uniform() * wide
    pad[0], pad[2] = pad[0] + left, pad[2] + wide - left
    return pad


def render_word(
    text: str,
    rng: np.random.Generator,
    fonts: Sequence[FontSpec],
    difficulty: float = 0.5,
    scene: Optional[SceneOptions] = None,
) -> Image.Image:
    """Renders ``text`` as a cropped scene-text-like RGB image, 32..64 px high, as wide as the text needs (at most
    ``MAX_WIDTH``).

    Random font and size, colours with enough contrast, textured background, outline/shadow, tracking, rotation,
    shear/perspective, padding, blur, low resolution and noise; everything drawn from ``rng``.

    Args:
        text: the text (no line breaks); every character must be renderable by every font in ``fonts``.
        rng: the source of randomness (same state -> same image).
        fonts: fonts to choose from, e.g. from :func:`list_fonts`.
        difficulty: 0 (clean, upright, high contrast) .. 1 (strong distortions); 0.5 is moderate and readable.
        scene: strengths of the scene-like variations (default: none; the image is then the one rendered before
            they existed).
    """
    d = float(np.clip(difficulty, 0, 1))
    scene = scene or SceneOptions()
    spec = fonts[int(rng.integers(len(fonts)))]
    font = load_font(spec.path, int(rng.choice(RENDER_SIZES)))
    stroke = int(rng.integers(1, max(2, font.size // 14) + 1)) if rng.random() < 0.12 else 0
    spacing = rng.uniform(-0.03, 0.3) * font.size if len(text) > 1 and rng.random() < 0.15 else 0.0
    track = scene.magnitude('spacing', rng) if len(text) > 1 else 0.0
    if track:  # from touching letters to letters a glyph apart
        spacing = rng.uniform(-0.08, 0.9 * track) * font.size
    masks, box = _draw_text(text, font, stroke, spacing)
    bend = scene.magnitude('curve', rng)
    if bend:
        masks, box = effects.curve(masks, box, rng, bend)
    tilt = scene.magnitude('perspective', rng)
    if d > 0 or tilt:
        masks, box = _warp(masks, box, rng, d, tilt)
    # Crop: the line box, or (sometimes) tight around the ink, as in real word crops; plus random padding.
    ink = masks[-1].getbbox() or (0, 0, 1, 1)
    if rng.random() < 0.3:
        box = ink
    else:
        box = (min(box[0], ink[0]), min(box[1], ink[1]), max(box[2], ink[2]), max(box[3], ink[3]))
    bh = box[3] - box[1]
    pad = rng.uniform(0.02, 0.25, 4) * bh * np.array([1, 0.8, 1, 0.8])  # left, top, right, bottom
    tight_h = bh + pad[1] + pad[3]
    loose = scene.magnitude('loose', rng)
    if loose:
        pad = _loose_margins(pad, box, rng, loose)
    crop = tuple(int(round(v)) for v in (box[0] - pad[0], box[1] - pad[1], box[2] + pad[2], box[3] + pad[3]))
    out_h = int(rng.integers(32, 65))
    out_w = int(np.clip(round((crop[2] - crop[0]) * out_h / max(crop[3] - crop[1], 1)), 8, MAX_WIDTH))
    # The text's scale: the crop's height without loose margins. Shadows, blur and low resolution follow the text,
    # not the canvas, or a word small on its canvas would be blurred past reading.
    text_h = float(out_h * tight_h / max(crop[3] - crop[1], 1)) if loose else out_h
    alphas = [
        np.asarray(m.crop(crop).resize((out_w, out_h), Image.Resampling.BILINEAR), np.float32) / 255 for m in masks
    ]
    alphas = [a[..., None] for a in alphas]

    min_contrast = 0.55 - 0.3 * d
    bg_col, fg_col = _colors(rng, min_contrast)
    dark = scene.chance('dark', rng)
    if dark:
        bg_col, fg_col = effects.light_on_dark(rng, bg_col, fg_col)
    contrast = abs(_lum(fg_col) - _lum(bg_col))
    img = _background(rng, out_h, out_w, bg_col, rng.uniform(0.1, 0.35) * contrast)
    textured = scene.magnitude('background', rng)
    if textured:
        img = img + effects.texture(rng, out_h, out_w, textured, contrast)
    if dark and rng.random() < 0.4:
        img = effects.glow(img, alphas[-1], fg_col, rng)
    if rng.random() < 0.08:  # drop shadow from the outermost mask
        dx, dy = (max(1, int(v)) for v in rng.uniform(0.03, 0.08, 2) * text_h)
        sh = np.zeros_like(alphas[-1])
        sh[dy:, dx:] = alphas[-1][: out_h - dy, : out_w - dx]
        sh_col = bg_col * 0.3 if _lum(fg_col) > _lum(bg_col) else np.minimum(bg_col + 90, 255)
        img = img * (1 - 0.7 * sh) + sh_col * 0.7 * sh
    if stroke:  # outline colour contrasting with the fill
        st_col = np.full(3, 0 if _lum(fg_col) > 127 else 255) if rng.random() < 0.7 else rng.uniform(0, 255, 3)
        st_col = st_col.astype(np.float32)
        img = img * (1 - alphas[1]) + st_col * alphas[1]
    fill = fg_col.astype(np.float32)
    if rng.random() < 0.15:  # gradient text
        fill = fill + rng.uniform(0.1, 0.3) * contrast * rng.uniform(0.5, 1, 3).astype(np.float32) * _ramp(
            rng, out_h, out_w
        )
    img = img * (1 - alphas[0]) + fill * alphas[0]
    covered = scene.magnitude('occlusion', rng)
    if covered:
        img = effects.occlude(img, alphas[-1], rng, covered, bg_col)
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), 'RGB')

    if rng.random() < 0.25 * d * 2:  # low resolution: down- then up-sampled
        f = rng.uniform(0.45, 0.8)
        small = image.resize((max(4, int(out_w * f)), max(4, int(out_h * f))), Image.Resampling.BILINEAR)
        image = small.resize((out_w, out_h), Image.Resampling.BILINEAR)
    if rng.random() < 0.4:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.3 + 1.4 * d) * text_h / 48))
    if rng.random() < 0.4 * d * 2:
        noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(2, 4 + 12 * d), (out_h, out_w, 1))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), 'RGB')
    # The camera's order: optics (blur), then the sensor (resolution), then compression.
    for name, effect in (('blur', effects.blur), ('lowres', effects.lowres), ('jpeg', effects.jpeg)):
        m = scene.magnitude(name, rng)
        if m:
            image = effect(image, rng, m, text_h)
    return image


def encode_image(image: Image.Image, rng: np.random.Generator, d: float) -> bytes:
    """PNG (10%) or JPEG of a random quality that falls with the difficulty ``d``."""
    if rng.random() < 0.1:
        return png_bytes(image)
    buf = io.BytesIO()
    image.save(buf, format='JPEG', quality=int(rng.integers(int(95 - 50 * d), 96)))
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format='PNG', compress_level=1)
    return buf.getvalue()
