"""clip4str: a faithful, fast re-implementation of CLIP4STR (scene text recognition with CLIP)."""

__version__ = '0.1.0'

__all__ = ['Reading', 'TextReader']


def __getattr__(name: str):
    # Lazy: `import strhub` stays light (no torch); `strhub.TextReader` imports the reader on first use.
    if name in ('TextReader', 'Reading'):
        import importlib

        return getattr(importlib.import_module('strhub.read'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
