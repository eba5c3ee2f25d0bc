"""Checkpoints loadable by name wherever a checkpoint path is accepted (``load_from_checkpoint('clip4str-tiny')``,
``TextReader``, ``tools/read.py``, ``tools/test.py``, ``pretrained=`` in training, ``hubconf.py``).

One registry, :data:`CHECKPOINTS`: the model shipped in this folder, and the original's releases, which are never
downloaded: a release is looked for under its released file name in ``$CLIP4STR_CHECKPOINTS``, then in the working
directory. A name may be spelt with ``-`` or ``_`` (``clip4str-base16x16``, torch.hub's ``clip4str_base16x16``), and
a release also by its file name (``clip4str_base16x16_d70bde1f2d.ckpt``, as the original's scripts take it). A name
is only used when no file or folder of that name exists, so a path always wins.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

PRETRAINED_DIR = Path(__file__).resolve().parent
ENV_VAR = 'CLIP4STR_CHECKPOINTS'

_GITHUB = 'the GitHub release 1.0.0 of VamosC/CLIP4STR'
_ZENODO = 'Zenodo record 8369439'
_HF = 'huggingface.co/mzhaoshuai/CLIP4STR'


@dataclass(frozen=True)
class Checkpoint:
    """A model loadable by name."""

    file: str  # shipped: in this folder; released: the name the original's authors published it under
    experiment: str  # configs/experiment/ of its architecture (torch.hub's pretrained=False builds it)
    about: str  # the model, its training data, its published word accuracy (COCO / ArT / Uber, the original's README)
    source: str  # shipped, or where the release is published
    shipped: bool = False


CHECKPOINTS: Dict[str, Checkpoint] = {
    'clip4str-tiny': Checkpoint(
        'clip4str_tiny.ckpt',
        'clip4str-tiny',
        'Tiny CLIP4STR (32x128 images, random-init towers) trained on the built-in synthetic dataset: reads rendered '
        'words, not photographs (strhub/pretrained/README.md)',
        'shipped in strhub/pretrained/',
        shipped=True,
    ),
    'clip4str-base16x16': Checkpoint(
        'clip4str_base16x16_d70bde1f2d.ckpt',
        'clip4str-b16',
        'CLIP4STR-B: OpenAI ViT-B/16, trained on Real (3.3M); COCO 80.80, ArT 85.74, Uber 86.70',
        _GITHUB,
    ),
    'clip4str-base16x16-synth': Checkpoint(
        'clip4str_base16x16_synth_a5e3386222.ckpt',
        'clip4str-b16',
        'CLIP4STR-B: OpenAI ViT-B/16, trained on MJ+ST; COCO 66.69, ArT 72.82, Uber 43.52',
        _GITHUB,
    ),
    'clip4str-large14x14': Checkpoint(
        'clip4str_large14x14_f125500adc.ckpt',
        'clip4str-l14',
        'CLIP4STR-L: OpenAI ViT-L/14, trained on Real (3.3M); COCO 81.97, ArT 85.83, Uber 87.36',
        _ZENODO,
    ),
    # The original's README links only the record; this file name follows the base16x16 pair (not confirmed).
    'clip4str-large14x14-synth': Checkpoint(
        'clip4str_large14x14_synth_3544c362f0.ckpt',
        'clip4str-l14',
        'CLIP4STR-L: OpenAI ViT-L/14, trained on MJ+ST; COCO 67.45, ArT 73.48, Uber 44.59',
        _ZENODO,
    ),
    'clip4str-base16x16-datacomp': Checkpoint(
        'clip4str_base_6e9fe947ac.pt',
        'clip4str-b16',
        'CLIP4STR-B: OpenCLIP ViT-B/16 (DataComp-1B), trained on RBU (6.5M); COCO 81.3, ArT 85.8, Uber 92.1',
        _HF,
    ),
    'clip4str-large14x14-datacomp': Checkpoint(
        'clip4str_large_3c9d881b88.pt',
        'clip4str-l14',
        'CLIP4STR-L: OpenCLIP ViT-L/14 (DataComp-1B), trained on RBU (6.5M); COCO 82.7, ArT 86.4, Uber 92.2',
        _HF,
    ),
    'clip4str-huge14x14-laion2b': Checkpoint(
        'clip4str_huge_5eef9f86e2.pt',
        'clip4str-h14',
        'CLIP4STR-H: OpenCLIP ViT-H/14 (LAION-2B), trained on RBU (6.5M); COCO 82.5, ArT 86.2, Uber 91.2',
        _HF,
    ),
    'clip4str-huge14x14-dfn5b': Checkpoint(
        'clip4str_huge_3e942729b1.pt',
        'clip4str-h14',
        'CLIP4STR-H: Apple DFN-5B ViT-H/14, trained on RBU (6.5M); COCO 83.0, ArT 86.4, Uber 91.7',
        _HF,
    ),
}
# name -> file of the shipped models (how each was made: README.md here)
PRETRAINED: Dict[str, str] = {name: c.file for name, c in CHECKPOINTS.items() if c.shipped}


def lookup(name: Union[str, os.PathLike]) -> Optional[Checkpoint]:
    """The checkpoint of a model name (``-`` or ``_``) or of a release's file name, else None."""
    name = str(name)
    key = name.replace('_', '-')
    if key in CHECKPOINTS:
        return CHECKPOINTS[key]
    return next((c for c in CHECKPOINTS.values() if not c.shipped and c.file == name), None)


def _release_dir() -> Optional[Path]:
    return Path(os.environ[ENV_VAR]).expanduser() if os.environ.get(ENV_VAR) else None


def pretrained_path(name: Union[str, os.PathLike]) -> Optional[Path]:
    """The file of the model ``name`` if ``name`` names one and is not an existing path, else None.

    A release is ``$CLIP4STR_CHECKPOINTS/<file>``, else ``<file>`` in the working directory; when it is in neither,
    the path it was expected at, which does not exist (report it with ``not_found_message(name)``).
    """
    ckpt = lookup(name)
    if ckpt is None or os.path.exists(name):
        return None
    if ckpt.shipped:
        return PRETRAINED_DIR / ckpt.file
    folder = _release_dir()
    candidates = ([folder / ckpt.file] if folder else []) + [Path(ckpt.file)]
    return next((c for c in candidates if c.is_file()), candidates[0])


def not_found_message(path: Union[str, os.PathLike]) -> str:
    """'checkpoint not found: PATH', with where a release was looked for and how to point there when PATH is a
    release's name, or the known names when PATH looks like one (no folder, no suffix)."""
    ckpt = lookup(path)
    if ckpt is not None and not ckpt.shipped:
        folder = _release_dir()
        where = f'{ENV_VAR}={folder}' if folder else f'{ENV_VAR} (not set)'
        return (
            f'checkpoint not found: {path}: the released file {ckpt.file} (from {ckpt.source}) is neither in '
            f'{where} nor in the working directory {Path.cwd()}: set {ENV_VAR} to the folder that holds it '
            f'(export {ENV_VAR}=DIR), or give its path'
        )
    p = Path(path)
    if str(p) != p.name or p.suffix:
        return f'checkpoint not found: {path}'
    released = ', '.join(n for n, c in CHECKPOINTS.items() if not c.shipped)
    return f'checkpoint not found: {path} (nor a shipped model: {", ".join(PRETRAINED)}; released: {released})'
