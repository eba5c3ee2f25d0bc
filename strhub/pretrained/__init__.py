"""Checkpoints shipped inside the package, loadable by name wherever a checkpoint path is accepted
(``load_from_checkpoint('clip4str-tiny')``, ``TextReader('clip4str-tiny')``, ``tools/read.py clip4str-tiny ...``).

A name is only used when no file or folder of that name exists, so a path always wins.
"""

import os
from pathlib import Path
from typing import Dict, Optional, Union

PRETRAINED_DIR = Path(__file__).resolve().parent
# name -> file in this folder (how each was made: README.md here)
PRETRAINED: Dict[str, str] = {'clip4str-tiny': 'clip4str_tiny.ckpt'}


def pretrained_path(name: Union[str, os.PathLike]) -> Optional[Path]:
    """The shipped file of ``name`` if ``name`` is a shipped model's name and not an existing path, else None."""
    name = str(name)
    if name not in PRETRAINED or os.path.exists(name):
        return None
    return PRETRAINED_DIR / PRETRAINED[name]


def not_found_message(path: Union[str, os.PathLike]) -> str:
    """'checkpoint not found: PATH', naming the shipped models when PATH looks like a name (no folder, no suffix)."""
    p = Path(path)
    hint = f' (nor a shipped model: {", ".join(PRETRAINED)})' if str(p) == p.name and not p.suffix else ''
    return f'checkpoint not found: {path}{hint}'
