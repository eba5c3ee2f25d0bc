"""Helpers shared by the command-line tools (``tools/test.py``, ``tools/read.py``).

Kept free of heavy imports at module level (torch and the models are imported where needed), so that argument
errors and a missing checkpoint are reported in a fraction of a second.
"""

import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple, Union

from strhub.pretrained import not_found_message, pretrained_path

# ``name:type=value`` (the original's ``parse_model_args``); the name is a Python identifier.
_MODEL_ARG = re.compile(r'^(?P<name>[A-Za-z_]\w*):(?P<type>int|float|str|bool)=(?P<value>.*)$', re.S)
_CASTS: Dict[str, Callable[[str], Any]] = {
    'int': int,
    'float': float,
    'str': str,
    # As the original: anything but 'true' (any case) is False.
    'bool': lambda v: v.lower() == 'true',
}


class CLIError(ValueError):
    """An error to report as one line (no traceback) before exiting with ``exit_code`` (a ValueError for API users)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def is_model_arg(arg: str) -> bool:
    """True if ``arg`` looks like ``name:type=value`` with a supported type."""
    return _MODEL_ARG.match(arg) is not None


def parse_model_args(args: Sequence[str]) -> Dict[str, Any]:
    """Parses ``name:type=value`` items into model keyword arguments.

    Args:
        args: e.g. ``['refine_iters:int=0', 'decode_ar:bool=false', "charset_test:str=abc"]``.

    Returns:
        ``{'refine_iters': 0, 'decode_ar': False, 'charset_test': 'abc'}`` (later items win).

    Raises:
        CLIError: an item is malformed, has an unknown type or a value that does not convert.
    """
    kwargs = {}
    for arg in args:
        m = _MODEL_ARG.match(arg)
        if m is None:
            raise CLIError(
                f'unrecognised argument {arg!r}: model arguments are name:type=value with type int, float, str or bool'
            )
        name, typ, value = m.group('name', 'type', 'value')
        try:
            kwargs[name] = _CASTS[typ](value)
        except ValueError:
            raise CLIError(f'invalid {typ} value in {arg!r}') from None
    return kwargs


def model_overrides(
    refine_iters: Optional[int] = None, decode: Optional[str] = None, extra: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """Constructor overrides from the ``--refine_iters`` / ``--decode ar|nar`` options and ``name:type=value`` items.

    The dedicated options win over the generic items.
    """
    kwargs = dict(extra or {})
    if refine_iters is not None:
        if refine_iters < 0:
            raise CLIError(f'--refine_iters must be >= 0 (got {refine_iters})')
        kwargs['refine_iters'] = refine_iters
    if decode is not None:
        kwargs['decode_ar'] = decode == 'ar'
    return kwargs


def select_device(spec: Union[str, 'torch.device', None] = 'auto') -> 'torch.device':  # noqa: F821
    """``auto`` (or None) -> ``cuda`` when available, else ``cpu``; otherwise the named device, checked.

    Unlike the original (default ``cuda``, and an unconditional ``torch.cuda.synchronize()``), everything also runs on
    machines without a GPU.

    Raises:
        CLIError: unknown device string, or CUDA requested but not available.
    """
    import torch

    if spec is None or str(spec) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise CLIError(f'invalid device {spec!r} (use auto, cpu, cuda or cuda:N)') from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise CLIError(f'device {spec!r} requested but CUDA is not available (use --device cpu or auto)')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CLIError(f'device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist')
    return device


def _val_accuracy(name: str) -> Optional[float]:
    # Lightning names the best checkpoints '{epoch}-{step}-{val_accuracy:.4f}-{val_NED:.4f}', i.e.
    # 'epoch=3-step=100-val_accuracy=91.2345-val_NED=95.0000.ckpt'; the original reads the accuracy as
    # name.split('-')[-2].split('=')[-1].
    try:
        return float(name.split('-')[-2].split('=')[-1])
    except (IndexError, ValueError):
        return None


def resolve_checkpoint(path: Union[str, os.PathLike]) -> Path:
    """A checkpoint file, a directory of them (as written by training: ``checkpoints/``) or a shipped model's name.

    For a directory, as the original: the file whose name contains ``val`` with the highest ``val_accuracy`` parsed
    from the name. Unlike the original, names that do not parse are ignored instead of crashing, and ``last.ckpt``
    is used when there is no such file.

    Raises:
        CLIError: the path does not exist, or the directory holds no usable checkpoint.
    """
    path = pretrained_path(path) or Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CLIError(not_found_message(path))
    if not path.is_dir():
        raise CLIError(f'checkpoint is not a file: {path}')
    scored = []
    for f in sorted(path.iterdir()):
        if f.is_file() and 'val' in f.name and not f.name.endswith('.txt'):
            acc = _val_accuracy(f.name[: -len(f.suffix)] if f.suffix == '.ckpt' else f.name)
            if acc is not None:
                scored.append((acc, f))
    if scored:
        return max(scored, key=lambda t: t[0])[1]  # first of equal maxima, like list.index(max(...))
    if (path / 'last.ckpt').is_file():
        return path / 'last.ckpt'
    raise CLIError(f'no checkpoint in {path} (expected *val_accuracy=*.ckpt files or last.ckpt)')


def load_model(path: Union[str, os.PathLike], trust: bool = False, **overrides: Any):
    """``strhub.models.load_from_checkpoint`` that turns every loading failure into a one-line ``CLIError``."""
    path = resolve_checkpoint(path)  # checked before importing the models (seconds of imports)
    from strhub.models import CheckpointError, load_from_checkpoint

    try:
        return load_from_checkpoint(path, trust=trust, **overrides)
    except CheckpointError as e:
        raise CLIError(f'cannot load checkpoint: {e}') from None
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:
        # e.g. incompatible overrides (TypeError/ValueError from the constructor) or a state dict that does not fit.
        raise CLIError(f'cannot load checkpoint {path}: {type(e).__name__}: {e}') from None


def run_cli(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None, prog: str = '') -> NoReturn:
    """Runs ``main(argv)`` and exits with its return code; a ``CLIError`` becomes ``prog: error: message``."""
    try:
        code = main(argv)
    except CLIError as e:
        print(f'{prog}: error: {e}' if prog else f'error: {e}', file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print(f'{prog}: interrupted' if prog else 'interrupted', file=sys.stderr)
        code = 130
    sys.exit(code)


def split_paths_and_model_args(items: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Separates ``name:type=value`` items from paths (an existing file with such a name stays a path)."""
    paths, model_args = [], []
    for item in items:
        (model_args if is_model_arg(item) and not os.path.exists(item) else paths).append(item)
    return paths, model_args
