"""A built-in synthetic scene-text dataset: word renderer, label sampler and LMDB dataset builder.

It needs no download: words come from the shipped ``wordlist.txt`` (SCOWL subset) plus random strings, and text is
rendered with the TTF/OTF fonts found on the machine (and Pillow's built-in scalable font). It exists so that the
whole pipeline (training, validation, tests) can run end to end anywhere, and so that a tiny model can be trained on
it quickly.

Layout written by :func:`make_dataset` (every LMDB is in the public STR format of :mod:`strhub.data.lmdb_io`)::

    <out>/meta.json                        how it was made: seed, charset, counts, fonts per split, versions
    <out>/train/synthetic/000/data.mdb     training shards of at most ``shard_size`` samples each (000, 001, ...)
    <out>/val/synthetic/data.mdb           training distribution (training words and fonts), fresh samples
    <out>/test/SynthWords/data.mdb         held-out words, fonts seen in training
    <out>/test/SynthFonts/data.mdb         held-out words AND held-out font families (not written with < 2 fonts)

Splits: the word list is split by a hash of each word (words of 1-2 letters always stay in training), and fonts by
a hash of their family name, so both splits are stable and need no stored state. Training labels are rejected if
any of their letter runs is a held-out word, so test labels never occur in training.

Determinism: sample ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([seed, crc32(s), i])`` only, so the
LMDB contents are byte-identical for the same seed, fonts, Pillow and NumPy versions, whatever the number of workers.
"""

import io
import json
import multiprocessing as mp
import os
import re
import shutil
import string
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from strhub.data.lmdb_io import write_lmdb
from strhub.data.utils import CHARSETS

__all__ = [
    'FontSpec',
    'SPLITS',
    'check_font',
    'find_font_files',
    'label_sampler',
    'list_fonts',
    'load_words',
    'make_dataset',
    'render_sample',
    'render_word',
    'sample_label',
    'split_fonts',
    'split_words',
]

VERSION = 1  # bump when the rendering or sampling changes, so meta.json tells datasets apart
WORDLIST = Path(__file__).with_name('wordlist.txt')
FONT_SUFFIXES = ('.ttf', '.otf', '.ttc')
# Fonts that pass the glyph checks but draw the wrong thing (matched on file stem and family name): symbol and
# dingbat fonts put other shapes at ASCII code points, LastResort draws one box per Unicode block, and the BaKoMa
# TeX fonts (cm*10, as in TeX and matplotlib distributions) put TeX-encoded glyphs at ASCII punctuation code points.
EXCLUDED_FONTS = re.compile(r'symbol|dingbat|wingding|webding|emoji|d050000l|lastresort|^cm[a-z]{1,4}10$', re.I)
RENDER_SIZES = (24, 28, 32, 36, 40, 48)  # font px before the final resize; a few sizes keep the font cache small
# How each split draws its labels ('train' words or held-out 'test' words) and its fonts ('train' or 'heldout').
SPLITS = {
    'train': ('train', 'train'),
    'val': ('train', 'train'),
    'SynthWords': ('test', 'train'),
    'SynthFonts': ('test', 'heldout'),
}
TEST_SETS = ('SynthWords', 'SynthFonts')
# Target word lengths, roughly those of scene-text words: mostly 3-8 characters.
_LEN_WEIGHTS = np.array([2, 5, 10, 13, 14, 13, 11, 9, 7, 5, 4, 2.5, 1.5, 1, 0.6, 0.4, 0.2, 0.1, 0.1, 0.1])
_LEN_WEIGHTS = _LEN_WEIGHTS / _LEN_WEIGHTS.sum()


# ----------------------------------------------------------------------------------------------------------- fonts
@dataclass(frozen=True)
class FontSpec:
    """A usable font: ``path`` is None for Pillow's built-in scalable font."""

    name: str
    family: str
    path: Optional[str] = None

    @property
    def file(self) -> str:
        return Path(self.path).name if self.path else 'Pillow built-in'


def _font_search_dirs(fonts_dir: Union[str, Path, None] = None, system: bool = True) -> List[Path]:
    dirs = [Path(p) for p in str(fonts_dir).split(os.pathsep) if p] if fonts_dir else []
    dirs += [Path(p) for p in os.environ.get('STRHUB_FONTS_DIR', '').split(os.pathsep) if p]
    if system:
        home = Path.home()
        dirs += [Path('/usr/share/fonts'), Path('/usr/local/share/fonts'), home / '.fonts', home / '.local/share/fonts']
        dirs += [Path('/Library/Fonts'), Path('/System/Library/Fonts'), home / 'Library/Fonts']
        if os.environ.get('WINDIR'):
            dirs.append(Path(os.environ['WINDIR']) / 'Fonts')
    return dirs


def find_font_files(fonts_dir: Union[str, Path, None] = None, system: bool = True) -> List[Path]:
    """Font files in ``fonts_dir`` (``os.pathsep``-separated), ``$STRHUB_FONTS_DIR`` and, if ``system``, the usual
    system/user font folders; in search order, without duplicates. Fonts bundled with Python packages (matplotlib's)
    are not searched, so that the dataset does not change with what happens to be installed."""
    seen, files = set(), []
    for d in _font_search_dirs(fonts_dir, system):
        if not d.is_dir():
            continue
        for p in sorted(d.rglob('*')):
            if p.suffix.lower() in FONT_SUFFIXES and p.is_file() and p.resolve() not in seen:
                seen.add(p.resolve())
                files.append(p)
    return files


@lru_cache(maxsize=None)  # also shared by all sizes of a font: Pillow keeps, not copies, a whole BytesIO
def _font_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


@lru_cache(maxsize=2048)
def _load_font(path: Optional[str], size: int) -> ImageFont.FreeTypeFont:
    if path is None:
        return ImageFont.load_default(size=size)
    # From memory, so that many cached sizes do not each hold a file handle open.
    return ImageFont.truetype(io.BytesIO(_font_bytes(path)), size, layout_engine=ImageFont.Layout.BASIC)


def _glyph(font: ImageFont.FreeTypeFont, char: str) -> Optional[Tuple[Tuple[int, int], bytes]]:
    mask = font.getmask(char)
    if mask.getbbox() is None:
        return None
    return mask.size, bytes(mask)


def _wrong_glyph_names(path: str) -> bool:
    """True if the font names the glyphs of the ASCII letters, but mostly not after those letters (a symbol font)."""
    from fontTools.ttLib import TTFont

    try:
        cmap = TTFont(path, lazy=True, fontNumber=0).getBestCmap() or {}
    except Exception:  # a file fontTools cannot parse: rely on the other checks
        return False
    names = [(c, cmap.get(ord(c), '')) for c in string.ascii_letters]
    named = [(c, n) for c, n in names if n and not re.fullmatch(r'glyph\d+|uni[0-9A-F]{4}|cid\d+', n)]
    return len(named) >= 10 and sum(c == n for c, n in named) < 0.5 * len(named)


def check_font(path: Optional[Union[str, Path]], charset: str) -> Tuple[Optional[FontSpec], str]:
    """Checks that a font renders every (non-space) character of ``charset`` with a real, distinct glyph.

    Returns:
        ``(FontSpec, '')`` if usable, else ``(None, reason)``.
    """
    path = str(path) if path is not None else None
    if path is not None and EXCLUDED_FONTS.search(Path(path).stem):
        return None, 'excluded by name (draws other shapes at ASCII code points)'
    try:
        font = _load_font(path, 32)
        family, style = font.getname()
        family = family or Path(path).stem
        if EXCLUDED_FONTS.search(family):
            return None, 'excluded by name (draws other shapes at ASCII code points)'
        if path is not None and _wrong_glyph_names(path):
            return None, 'symbol font (its glyph names are not the letters)'
        notdef = _glyph(font, '\U0010fffd')  # a private-use code point: what the font draws for a missing glyph
        glyphs = []
        for c in charset:
            if c.isspace():
                continue
            g = _glyph(font, c)
            if g is None or g == notdef:
                return None, f'no glyph for {c!r}'
            glyphs.append(g)
    except Exception as e:  # a broken or unsupported file; any error just means "not usable"
        return None, f'cannot load ({type(e).__name__}: {e})'
    # Symbol fonts and block-placeholder fonts map many code points to one shape.
    if len(set(glyphs)) < 0.9 * len(glyphs):
        return None, 'glyphs not distinct'
    name = family if style in ('', 'Regular', 'Book', 'Roman', 'Normal') else f'{family} {style}'
    return FontSpec(name=name, family=family, path=path), ''


@lru_cache(maxsize=16)
def _list_fonts(charset: str, fonts_dir: Optional[str], system: bool, builtin: bool) -> Tuple[Tuple, Tuple]:
    fonts, rejected = {}, []
    candidates = [str(p) for p in find_font_files(fonts_dir, system)] + ([None] if builtin else [])
    for path in candidates:
        spec, why = check_font(path, charset)
        if spec is None:
            rejected.append((path or 'Pillow built-in', why))
        elif spec.name not in fonts:  # the same font in several folders (e.g. in a system and a user folder)
            fonts[spec.name] = spec
    return tuple(sorted(fonts.values(), key=lambda f: (f.family, f.name))), tuple(rejected)


def list_fonts(
    charset: str = CHARSETS['94_full'],
    fonts_dir: Union[str, Path, None] = None,
    system: bool = True,
    builtin: bool = True,
    with_rejected: bool = False,
):
    """Usable fonts for ``charset``, sorted by family and name, deduplicated by name.

    Args:
        charset: characters every font must render (a key of ``CHARSETS`` also works).
        fonts_dir: extra font folder(s), ``os.pathsep``-separated; ``$STRHUB_FONTS_DIR`` is always searched too.
        system: also search the system/user font folders.
        builtin: include Pillow's built-in scalable font (Pillow >= 10.1), so the list is never empty.
        with_rejected: also return ``[(path, reason)]`` of the font files that were rejected.

    Returns:
        ``List[FontSpec]``, or ``(fonts, rejected)`` if ``with_rejected``.
    """
    charset = CHARSETS.get(charset, charset)
    fonts, rejected = _list_fonts(charset, str(fonts_dir) if fonts_dir else None, system, builtin)
    return (list(fonts), list(rejected)) if with_rejected else list(fonts)


def split_fonts(fonts: Sequence[FontSpec], holdout_frac: float = 0.2) -> Tuple[List[FontSpec], List[FontSpec]]:
    """Splits fonts into (training, held-out), holding out whole families (all their styles).

    Families are ranked by a hash of their name and the first ``round(holdout_frac * n)`` (at least 1, leaving at
    least 1) are held out; with a single family, single fonts are held out instead. One font: nothing held out.
    """
    families = sorted({f.family for f in fonts})
    key = (lambda f: f.family) if len(families) >= 2 else (lambda f: f.name)
    units = sorted({key(f) for f in fonts}, key=lambda u: (zlib.crc32(u.encode()), u))
    if len(units) < 2 or holdout_frac <= 0:
        return list(fonts), []
    held = set(units[: min(len(units) - 1, max(1, round(holdout_frac * len(units))))])
    return [f for f in fonts if key(f) not in held], [f for f in fonts if key(f) in held]


# ----------------------------------------------------------------------------------------------------------- words
def load_words(path: Union[str, Path, None] = None) -> List[str]:
    """Words of a word list (the shipped one by default): one per line, ``#`` comments and blank lines skipped."""
    text = Path(path or WORDLIST).read_text(encoding='utf-8')
    return [w for w in (line.strip() for line in text.splitlines()) if w and not w.startswith('#')]


def split_words(words: Iterable[str], test_frac: float = 0.1) -> Tuple[List[str], List[str]]:
    """Deterministic (train, test) split of lower-cased, deduplicated words by a hash of each word.

    Words of 1-2 letters always go to training: they are too few to hold out and they occur inside random strings.
    """
    words = sorted({w.lower() for w in words})
    is_test = [len(w) >= 3 and zlib.crc32(w.encode()) % 10000 < test_frac * 10000 for w in words]
    return [w for w, t in zip(words, is_test) if not t], [w for w, t in zip(words, is_test) if t]


class _WordPool:
    """Words of one split bucketed by length, so a target length can be drawn first (realistic lengths)."""

    def __init__(self, words: Sequence[str], charset: str, max_len: int) -> None:
        cs = set(charset) | set(charset.lower())  # case is applied later
        self.words = [w for w in words if 1 <= len(w) <= max_len and set(w) <= cs]
        if not self.words:
            raise ValueError('no word of the word list fits the charset')
        self.by_len: Dict[int, List[str]] = {}
        for w in self.words:
            self.by_len.setdefault(len(w), []).append(w)

    def draw(self, rng: np.random.Generator) -> str:
        n = int(rng.choice(len(_LEN_WEIGHTS), p=_LEN_WEIGHTS)) + 1
        bucket = self.by_len.get(n) or self.words
        return bucket[int(rng.integers(len(bucket)))]


# Label templates; '{}' is a word, the others are number parts (see _LabelSampler.number).
_PUNCT_WRAPS = tuple(
    r"""{}. {}, {}! {}? {}: {}; "{}" '{}' ({}) {}'s #{} @{} {}-{} {}/{} {}&{} {}_{} www.{}.com {}@{}.com {}... [{}]
    {}* <{}> {}+ ~{} {}|{} {{{}}} {}={} {}\{} ^{} {}` ${} {}%""".split()
)
_NUMBER_FORMS = tuple(
    """{d} {d} {d} ${d}.{c} {h}:{m} {d}.{c} {c}% {y}-{c}-{c} +{d} {t},{k} #{d} ({d}) {c}/{c}/{y} {d}x{d} {d}km {d}kg
    No.{d} {d}th {c}:{c}""".split()
)


@dataclass
class _LabelSampler:
    charset: str
    max_len: int
    train: _WordPool
    test: _WordPool
    test_set: frozenset

    def __post_init__(self) -> None:
        cs = self.charset
        self.has_lower = any(c in cs for c in string.ascii_lowercase)
        self.has_upper = any(c in cs for c in string.ascii_uppercase)
        self.punct = ''.join(c for c in cs if c in string.punctuation)
        self.alnum = ''.join(c for c in cs if c.isalnum())
        self.chars = ''.join(c for c in cs if not c.isspace())
        kinds = {'word': 0.55, 'compound': 0.05, 'number': 0.1, 'alnum': 0.15, 'random': 0.05, 'punct': 0.1}
        if not self.punct:
            del kinds['punct']
        self.kinds = list(kinds)
        self.kind_p = np.array(list(kinds.values())) / sum(kinds.values())

    def case(self, word: str, rng: np.random.Generator) -> str:
        if not self.has_upper:
            return word.lower()
        if not self.has_lower:
            return word.upper()
        r = rng.random()
        return word.lower() if r < 0.5 else word.capitalize() if r < 0.8 else word.upper()

    def digits(self, rng: np.random.Generator, lo: int, hi: int) -> str:
        return str(int(rng.integers(10 ** (lo - 1) if lo > 1 else 0, 10**hi)))

    def number(self, rng: np.random.Generator) -> str:
        form = _NUMBER_FORMS[int(rng.integers(len(_NUMBER_FORMS)))] if self.punct else '{d}'
        return form.format(
            d=self.digits(rng, 1, int(rng.integers(1, 7))),
            c=f'{int(rng.integers(100)):02d}',
            h=int(rng.integers(24)),
            m=f'{int(rng.integers(60)):02d}',
            y=int(rng.integers(1900, 2040)),
            t=int(rng.integers(1, 1000)),
            k=f'{int(rng.integers(1000)):03d}',
        )

    def punctuated(self, pool: _WordPool, rng: np.random.Generator) -> str:
        form = _PUNCT_WRAPS[int(rng.integers(len(_PUNCT_WRAPS)))]
        return form.format(*(self.case(pool.draw(rng), rng) for _ in range(form.count('{}'))))

    def random_string(self, rng: np.random.Generator, chars: str) -> str:
        n = min(int(rng.geometric(0.2)), 12)
        if chars is self.alnum and rng.random() < 0.5:  # product-code look: upper-case letters and digits
            chars = ''.join(c for c in chars if not c.islower()) or chars
        return ''.join(chars[i] for i in rng.integers(len(chars), size=n))

    def leaks(self, label: str) -> bool:
        return any(run in self.test_set for run in re.findall('[a-z]{3,}', label.lower()))

    def sample(self, rng: np.random.Generator, words: str = 'train') -> str:
        """A label of ``words`` ('train' or 'test' words); a training label never contains a test word."""
        for _ in range(1000):
            if words == 'test':
                label = self.punctuated(self.test, rng) if self.punct and rng.random() < 0.15 else None
                label = label or self.case(self.test.draw(rng), rng)
            else:
                kind = self.kinds[int(rng.choice(len(self.kinds), p=self.kind_p))]
                if kind == 'word':
                    label = self.case(self.train.draw(rng), rng)
                elif kind == 'compound':  # e.g. 'hotdog', 'HotDog'
                    a, b = self.case(self.train.draw(rng), rng), self.case(self.train.draw(rng), rng)
                    label = a + (b.capitalize() if a[:1].isupper() else b)
                elif kind == 'number':
                    label = self.number(rng)
                elif kind == 'alnum':
                    label = self.random_string(rng, self.alnum)
                elif kind == 'random':  # every character of the charset shows up in training
                    label = self.random_string(rng, self.chars)
                else:
                    label = self.punctuated(self.train, rng)
            if 1 <= len(label) <= self.max_len and set(label) <= set(self.charset):
                if words == 'test' or not self.leaks(label):
                    return label
        raise RuntimeError(f'cannot sample a label within {self.charset!r} of length <= {self.max_len}')


def label_sampler(
    charset: str = '94_full', max_label_length: int = 25, words: Optional[Sequence[str]] = None, test_frac: float = 0.1
) -> _LabelSampler:
    """A label sampler with ``.sample(rng, 'train' | 'test')``; see :func:`sample_label`."""
    charset = CHARSETS.get(charset, charset)
    train, test = split_words(load_words() if words is None else words, test_frac)
    return _LabelSampler(
        charset=charset,
        max_len=max_label_length,
        train=_WordPool(train, charset, max_label_length),
        test=_WordPool(test, charset, max_label_length),
        test_set=frozenset(test),
    )


_cached_sampler = lru_cache(maxsize=8)(label_sampler)


def sample_label(rng: np.random.Generator, charset: str = '94_full', words: str = 'train', max_label_length=25) -> str:
    """One label: training mix (words in three cases, compounds, numbers, random strings, punctuation) or held-out
    words (``words='test'``). Always within ``charset`` and of length 1..``max_label_length``."""
    return _cached_sampler(charset, max_label_length).sample(rng, words)


# ------------------------------------------------------------------------------------------------------- rendering
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


def _warp(masks: List[Image.Image], box: Tuple, rng: np.random.Generator, d: float) -> Tuple[List[Image.Image], Tuple]:
    """Rotation, shear, horizontal stretch and a perspective jitter of the corners, applied to all masks alike."""
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
    dst -= dst.min(0)
    fwd = _homography(src, dst)
    inv = np.linalg.inv(fwd)
    coeffs = tuple((inv / inv[2, 2]).flatten()[:8])
    size = tuple(int(np.ceil(v)) + 1 for v in dst.max(0))
    out = [m.transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR) for m in masks]
    corners = _apply(fwd, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float))
    return out, (*corners.min(0), *corners.max(0))


def render_word(
    text: str,
    rng: np.random.Generator,
    fonts: Sequence[FontSpec],
    difficulty: float = 0.5,
    height: Optional[int] = None,
    max_width: int = 1600,
) -> Image.Image:
    """Renders ``text`` as a cropped scene-text-like RGB image.

    Random font and size, colours with enough contrast, textured background, outline/shadow, tracking, rotation,
    shear/perspective, padding, blur, low resolution and noise; everything drawn from ``rng``.

    Args:
        text: the text (no line breaks); every character must be renderable by every font in ``fonts``.
        rng: the source of randomness (same state -> same image).
        fonts: fonts to choose from, e.g. from :func:`list_fonts`.
        difficulty: 0 (clean, upright, high contrast) .. 1 (strong distortions); 0.5 is moderate and readable.
        height: output height in px (default: random in 32..64); the width follows the text.
        max_width: the width is capped (squeezing very long text).
    """
    d = float(np.clip(difficulty, 0, 1))
    spec = fonts[int(rng.integers(len(fonts)))]
    font = _load_font(spec.path, int(rng.choice(RENDER_SIZES)))
    stroke = int(rng.integers(1, max(2, font.size // 14) + 1)) if rng.random() < 0.12 else 0
    spacing = rng.uniform(-0.03, 0.3) * font.size if len(text) > 1 and rng.random() < 0.15 else 0.0
    masks, box = _draw_text(text, font, stroke, spacing)
    if d > 0:
        masks, box = _warp(masks, box, rng, d)
    # Crop: the line box, or (sometimes) tight around the ink, as in real word crops; plus random padding.
    ink = masks[-1].getbbox() or (0, 0, 1, 1)
    if rng.random() < 0.3:
        box = ink
    else:
        box = (min(box[0], ink[0]), min(box[1], ink[1]), max(box[2], ink[2]), max(box[3], ink[3]))
    bh = box[3] - box[1]
    pad = rng.uniform(0.02, 0.25, 4) * bh * np.array([1, 0.8, 1, 0.8])  # left, top, right, bottom
    crop = tuple(int(round(v)) for v in (box[0] - pad[0], box[1] - pad[1], box[2] + pad[2], box[3] + pad[3]))
    out_h = int(height or rng.integers(32, 65))
    out_w = int(np.clip(round((crop[2] - crop[0]) * out_h / max(crop[3] - crop[1], 1)), 8, max_width))
    alphas = [
        np.asarray(m.crop(crop).resize((out_w, out_h), Image.Resampling.BILINEAR), np.float32) / 255 for m in masks
    ]
    alphas = [a[..., None] for a in alphas]

    min_contrast = 0.55 - 0.3 * d
    bg_col, fg_col = _colors(rng, min_contrast)
    contrast = abs(_lum(fg_col) - _lum(bg_col))
    img = _background(rng, out_h, out_w, bg_col, rng.uniform(0.1, 0.35) * contrast)
    if rng.random() < 0.08:  # drop shadow from the outermost mask
        dx, dy = (max(1, int(v)) for v in rng.uniform(0.03, 0.08, 2) * out_h)
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
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), 'RGB')

    if rng.random() < 0.25 * d * 2:  # low resolution: down- then up-sampled
        f = rng.uniform(0.45, 0.8)
        small = image.resize((max(4, int(out_w * f)), max(4, int(out_h * f))), Image.Resampling.BILINEAR)
        image = small.resize((out_w, out_h), Image.Resampling.BILINEAR)
    if rng.random() < 0.4:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.3 + 1.4 * d) * out_h / 48))
    if rng.random() < 0.4 * d * 2:
        noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(2, 4 + 12 * d), (out_h, out_w, 1))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), 'RGB')
    return image


def _encode(image: Image.Image, rng: np.random.Generator, d: float) -> bytes:
    buf = io.BytesIO()
    if rng.random() < 0.1:
        image.save(buf, format='PNG', compress_level=1)
    else:
        image.save(buf, format='JPEG', quality=int(rng.integers(int(95 - 50 * d), 96)))
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------------- dataset
@dataclass
class _Config:
    seed: int
    difficulty: float
    sampler: _LabelSampler
    fonts: Dict[str, List[FontSpec]]


_CFG: Optional[_Config] = None


def _init_worker(cfg: _Config) -> None:
    global _CFG
    _CFG = cfg


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def render_sample(
    split: str,
    index: int,
    sampler: _LabelSampler,
    fonts: Dict[str, List[FontSpec]],
    seed: int = 0,
    difficulty: float = 0.5,
) -> Tuple[bytes, str]:
    """Sample ``index`` of ``split`` (a key of ``SPLITS``): (encoded image, label), a pure function of its args."""
    rng = _sample_rng(seed, split, index)
    words, font_set = SPLITS[split]
    label = sampler.sample(rng, words)
    image = render_word(label, rng, fonts[font_set], difficulty)
    return _encode(image, rng, difficulty), label


def _task(job: Tuple[str, int]) -> Tuple[bytes, str]:
    return render_sample(job[0], job[1], _CFG.sampler, _CFG.fonts, _CFG.seed, _CFG.difficulty)


def _plan(num_train: int, num_val: int, num_test: int, shard_size: int, heldout: bool) -> List[Tuple[str, str, range]]:
    """[(LMDB dir relative to out, split, sample indices)]."""
    shards = max(1, -(-num_train // shard_size))
    plan = [
        (f'train/synthetic/{k:03d}', 'train', range(k * shard_size, min((k + 1) * shard_size, num_train)))
        for k in range(shards)
    ]
    plan.append(('val/synthetic', 'val', range(num_val)))
    plan += [(f'test/{s}', s, range(num_test)) for s in TEST_SETS if s != 'SynthFonts' or heldout]
    return plan


def make_dataset(
    out_dir: Union[str, Path],
    num_train: int = 20000,
    num_val: int = 1000,
    num_test: int = 1000,
    charset: str = '94_full',
    seed: int = 0,
    workers: Optional[int] = None,
    max_label_length: int = 25,
    difficulty: float = 0.5,
    fonts_dir: Union[str, Path, None] = None,
    system_fonts: bool = True,
    fonts: Optional[Sequence[FontSpec]] = None,
    font_holdout: float = 0.2,
    word_holdout: float = 0.1,
    shard_size: int = 50000,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict:
    """Generates the synthetic dataset under ``out_dir`` (layout in the module docstring).

    Args:
        out_dir: output folder (created); other content in it is left alone.
        num_train, num_val, num_test: samples for training, validation and each test set.
        charset: a key of ``CHARSETS`` or the characters themselves; every label is within it.
        seed: the seed; same seed (and fonts, library versions) -> same LMDB contents.
        workers: processes rendering in parallel (default: all CPUs); the result does not depend on it.
        max_label_length: longest label.
        difficulty: distortion strength, 0..1 (see :func:`render_word`).
        fonts_dir: extra font folder(s); ``system_fonts=False`` uses only these (and Pillow's built-in font).
        fonts: use exactly these fonts instead of searching (``fonts_dir``/``system_fonts`` are then ignored).
        font_holdout, word_holdout: fractions of font families and of words kept out of training.
        shard_size: samples per training LMDB.
        overwrite: replace the LMDBs/meta.json this function writes if present (otherwise that is an error).
        progress: show a tqdm progress bar.

    Returns:
        A summary: counts per LMDB, fonts per split, word counts, elapsed seconds and images per second.
    """
    t0 = time.time()
    out = Path(out_dir)
    charset_str = CHARSETS.get(charset, charset)
    fonts = list(fonts) if fonts is not None else list_fonts(charset_str, fonts_dir, system_fonts)
    train_fonts, held_fonts = split_fonts(fonts, font_holdout)
    sampler = label_sampler(charset_str, max_label_length, test_frac=word_holdout)
    plan = _plan(num_train, num_val, num_test, shard_size, bool(held_fonts))

    targets = [out / 'train' / 'synthetic', out / 'val' / 'synthetic', out / 'meta.json']
    targets += [out / 'test' / s for s in TEST_SETS]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f'{existing[0]} exists (pass overwrite=True / --overwrite to replace it)')
    for t in existing:
        shutil.rmtree(t) if t.is_dir() else t.unlink()

    cfg = _Config(
        seed=seed, difficulty=difficulty, sampler=sampler, fonts={'train': train_fonts, 'heldout': held_fonts}
    )
    workers = max(1, workers if workers is not None else os.cpu_count() or 1)
    total = sum(len(r) for _, _, r in plan)
    counts = {}
    pool = None
    if workers > 1:  # fork shares the loaded fonts and word lists; spawn where there is no fork
        ctx = mp.get_context('fork' if 'fork' in mp.get_all_start_methods() else 'spawn')
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,))
    else:
        _init_worker(cfg)
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit='img', disable=not progress, desc='rendering', mininterval=0.5)
        with bar:
            for rel, split, indices in plan:
                jobs = [(split, i) for i in indices]
                results = pool.imap(_task, jobs, chunksize=32) if pool else map(_task, jobs)
                counts[rel] = write_lmdb(out / rel, _progress(results, bar))
        if pool:
            pool.close()
    finally:
        if pool:
            pool.terminate()  # a no-op after close() and the last result; stops the workers on errors
            pool.join()
    elapsed = time.time() - t0

    meta = {
        'generator': f'strhub.data.synthetic v{VERSION}',
        'seed': seed,
        'charset': charset if charset in CHARSETS else charset_str,
        'max_label_length': max_label_length,
        'difficulty': difficulty,
        'counts': counts,
        'splits': {s: {'words': w, 'fonts': f} for s, (w, f) in SPLITS.items()},
        'words': {'train': len(sampler.train.words), 'test': len(sampler.test.words), 'holdout': word_holdout},
        'font_families': {k: sorted({f.family for f in v}) for k, v in cfg.fonts.items()},
        'fonts': {k: [f'{f.name} ({f.file})' for f in v] for k, v in cfg.fonts.items()},
        'versions': {'pillow': Image.__version__, 'numpy': np.__version__},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')
    return {**meta, 'out_dir': str(out), 'total': total, 'elapsed_s': elapsed, 'images_per_s': total / elapsed}


def _progress(results: Iterator, bar) -> Iterator:
    for r in results:
        bar.update()
        yield r
