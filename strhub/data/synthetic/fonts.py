"""Fonts of the synthetic dataset: finding font files, checking that a font draws every character, listing the
usable ones and splitting them into training and held-out families."""

import io
import os
import re
import string
import unicodedata
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from PIL import ImageFont

from strhub.data.utils import CHARSETS

FONT_SUFFIXES = ('.ttf', '.otf', '.ttc')
# Fonts that pass the glyph checks but draw the wrong thing (matched on file stem and family name): symbol and
# dingbat fonts put other shapes at ASCII code points, LastResort draws one box per Unicode block, and the BaKoMa
# TeX fonts (cm*10, as in TeX and matplotlib distributions) put TeX-encoded glyphs at ASCII punctuation code points.
EXCLUDED_FONTS = re.compile(r'symbol|dingbat|wingding|webding|emoji|d050000l|lastresort|^cm[a-z]{1,4}10$', re.I)


# Letters that tell whether a font covers a script (:func:`script_coverage`). Scripts whose letters change shape
# with their neighbours or run right to left (Arabic, Hebrew, the Indic scripts, Thai) need text shaping, which the
# renderer's basic layout does not do, so they are not offered.
SCRIPT_SAMPLES = {
    'Latin': string.ascii_letters,
    'Latin accented': 'àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœßÀÁÂÇÈÉÊÑÓÖØÜ',
    'Vietnamese': 'ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹĐ',
    'Greek': 'αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ',
    'Cyrillic': 'абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ',
    'Chinese': '的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可',
    'Japanese kana': 'あいうえおかきくけこさしすせそたちつてとなにぬねのアイウエオカキクケコサシスセソタチツテト',
    'Korean': '가나다라마바사아자차카타파하거너더러머버서어저처국한글대학교',
}


def _script(char: str) -> str:
    """The first word of a character's Unicode name: LATIN, GREEK, CYRILLIC, DIGIT, CJK, HANGUL, ..."""
    return unicodedata.name(char, 'UNKNOWN').split()[0]


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
def load_font(path: Optional[str], size: int) -> ImageFont.FreeTypeFont:
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
        font = load_font(path, 32)
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
    # Symbol fonts and block-placeholder fonts map many code points to one shape. Shapes are told apart within each
    # script only: letters of two scripts may rightly share one (Latin A, Greek Alpha and Cyrillic A in most fonts).
    by_script: Dict[str, set] = {}
    for c, g in zip((c for c in charset if not c.isspace()), glyphs):
        by_script.setdefault(_script(c), set()).add(g)
    if sum(map(len, by_script.values())) < 0.9 * len(glyphs):
        return None, 'glyphs not distinct'
    name = family if style in ('', 'Regular', 'Book', 'Roman', 'Normal') else f'{family} {style}'
    return FontSpec(name=name, family=family, path=path), ''


@lru_cache(maxsize=16)
def _list_fonts(charset: str, fonts_dir: Optional[str], system: bool) -> Tuple[Tuple, Tuple]:
    fonts, rejected = {}, []
    candidates = [str(p) for p in find_font_files(fonts_dir, system)] + [None]  # None: Pillow's built-in font
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
    with_rejected: bool = False,
):
    """Usable fonts for ``charset``, sorted by family and name, deduplicated by name; Pillow's built-in scalable
    font (Pillow >= 10.1) is always among them, so the list is never empty.

    Args:
        charset: characters every font must render (a key of ``CHARSETS`` also works).
        fonts_dir: extra font folder(s), ``os.pathsep``-separated; ``$STRHUB_FONTS_DIR`` is always searched too.
        system: also search the system/user font folders.
        with_rejected: also return ``[(path, reason)]`` of the font files that were rejected.

    Returns:
        ``List[FontSpec]``, or ``(fonts, rejected)`` if ``with_rejected``.
    """
    charset = CHARSETS.get(charset, charset)
    fonts, rejected = _list_fonts(charset, str(fonts_dir) if fonts_dir else None, system)
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


def script_coverage(fonts_dir: Union[str, Path, None] = None, system: bool = True) -> Dict[str, List[FontSpec]]:
    """For each script of ``SCRIPT_SAMPLES``, the fonts found that draw all of its sample letters (and the digits),
    i.e. the fonts the synthetic dataset could use for a charset of that script."""
    return {
        script: list_fonts(string.digits + letters, fonts_dir, system) for script, letters in SCRIPT_SAMPLES.items()
    }
