"""The charsets by name (spec §1.3): their one definition, for the code and for the configs.

``configs/charset/*.yaml`` and ``configs/main.yaml`` name them as ``${charset:94_full}``: the OmegaConf resolver
``charset`` is registered when this module is imported (``strhub.data.utils`` imports it), before any config is
composed. Kept free of torch, so that the tools can build a test charset before the heavy imports.
"""

import string

from omegaconf import OmegaConf

_ALPHANUMERIC = string.digits + string.ascii_lowercase

CHARSETS = {
    '36_lowercase': _ALPHANUMERIC,
    '62_mixed-case': _ALPHANUMERIC + string.ascii_uppercase,
    '94_full': _ALPHANUMERIC + string.ascii_uppercase + string.punctuation,
}


def charset(name: str) -> str:
    """The charset named ``name`` (a key of ``CHARSETS``).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    try:
        return CHARSETS[name]
    except KeyError:
        raise ValueError(f'unknown charset {name!r} (known: {", ".join(CHARSETS)})') from None


def benchmark_charset(cased: bool = False, punctuation: bool = False) -> str:
    """The original ``test.py``'s ``charset_test``: lower-case alphanumerics (the benchmark protocol), with upper
    case for ``--cased`` and ``string.punctuation`` for ``--punctuation``."""
    return _ALPHANUMERIC + (string.ascii_uppercase if cased else '') + (string.punctuation if punctuation else '')


if not OmegaConf.has_resolver('charset'):
    OmegaConf.register_new_resolver('charset', charset)
