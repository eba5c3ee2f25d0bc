"""clip4str: a faithful, fast re-implementation of CLIP4STR (scene text recognition with CLIP)."""

__version__ = '0.1.0'
