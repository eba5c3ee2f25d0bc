"""The charsets by name (spec §1.3): their one definition, for the code and for the configs.

``configs/charset/*.yaml`` and ``configs/main.yaml`` name them as ``${charset:94_full}``: the OmegaConf resolver
``charset`` is registered when this module is imported (``strhub.data.utils`` imports it), before any config is
composed. Kept free of torch, so that the tools can build a test charset before the heavy imports.
"""

import string
import unicodedata
from pathlib import Path

from omegaconf import OmegaConf

_ALPHANUMERIC = string.digits + string.ascii_lowercase

CHARSETS = {
    '36_lowercase': _ALPHANUMERIC,
    '62_mixed-case': _ALPHANUMERIC + string.ascii_uppercase,
    '94_full': _ALPHANUMERIC + string.ascii_uppercase + string.punctuation,
    # Ours, for fine-tuning to a new script (README, "Fine-tuning"): mixed-case Latin and monotonic Greek.
    '125_latin-greek': _ALPHANUMERIC
    + string.ascii_uppercase
    + 'αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώ'
    + 'ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩΆΈΉΊΌΎΏ',
}


def read_charset_file(path) -> str:
    """The characters of a UTF-8 text file, in order: line breaks (and a byte-order mark) ignored, NFC-composed as
    labels are (``é`` is one character, however the file spells it).

    Raises:
        ValueError: the file is unreadable, empty, or repeats a character (naming the file and the character).
    """
    try:
        text = Path(path).read_text(encoding='utf-8-sig')
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f'cannot read charset file {path}: {e}') from None
    chars = unicodedata.normalize('NFC', ''.join(text.splitlines()))
    return _unique(chars, f'charset file {path}')


def _unique(chars: str, what: str) -> str:
    if not chars:
        raise ValueError(f'{what} is empty')
    repeated = next((c for i, c in enumerate(chars) if c in chars[:i]), None)
    if repeated is not None:
        raise ValueError(f'{what} repeats {repeated!r} (U+{ord(repeated):04X})')
    return chars


def charset(name: str) -> str:
    """The charset named ``name`` (a key of ``CHARSETS``), or read from the file ``name``
    (:func:`read_charset_file`), e.g. ``${charset:charsets/greek.txt}`` in a config or on the command line.

    Raises:
        ValueError: neither a known name nor a file, listing the known names.
    """
    if name in CHARSETS:
        return CHARSETS[name]
    if Path(name).is_file():
        return read_charset_file(name)
    raise ValueError(f'unknown charset {name!r}: neither a name ({", ".join(CHARSETS)}) nor a file')


def charset_from_spec(spec: str) -> str:
    """A charset given on a command line: a name, a file (:func:`charset`), or else the characters themselves.

    Raises:
        ValueError: an unreadable or empty file, or repeated characters (naming the first).
    """
    if spec in CHARSETS or Path(spec).is_file():
        return charset(spec)
    return _unique(unicodedata.normalize('NFC', spec), f'charset {spec!r}')


def benchmark_charset(cased: bool = False, punctuation: bool = False) -> str:
    """The original ``test.py``'s ``charset_test``: lower-case alphanumerics (the benchmark protocol), with upper
    case for ``--cased`` and ``string.punctuation`` for ``--punctuation``."""
    return _ALPHANUMERIC + (string.ascii_uppercase if cased else '') + (string.punctuation if punctuation else '')


if not OmegaConf.has_resolver('charset'):
    OmegaConf.register_new_resolver('charset', charset)
