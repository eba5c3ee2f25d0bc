"""What the command-line tools share: argument parsing, the one error convention, checkpoint and image paths.

Imported by the tools as ``_cli`` (their folder is first on ``sys.path`` when run as ``python tools/x.py``). Kept free
of heavy imports at module level (torch and the models are imported where needed), so that argument errors and a
missing checkpoint are reported in a fraction of a second.

The error convention: a user mistake (bad argument, missing file, unusable checkpoint, device or image) ends the
tool with ``prog: error: message`` on stderr and a non-zero exit code, without a traceback. The tools raise
``CLIError`` for their own checks; the errors the library defines for bad input (``CheckpointError``,
``ImageReadError``, ``DeviceError``, ...) are reported the same way by :func:`run_cli`.
"""

import argparse
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
MODEL_ARGS_HELP = (
    'Model arguments name:type=value (type int, float, str or bool) override the checkpoint, '
    'e.g. refine_iters:int=0 decode_ar:bool=false.'
)

# Extensions picked up when scanning folders (compared case-insensitively). The original took only names ending in
# 'png', 'jpeg' or 'jpg' (case-sensitive).
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pbm', '.jp2')


class CLIError(Exception):
    """An error to report as one line (no traceback) before exiting with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; option help ends with the default, unless it is None, False or empty
    (the help then says what happens) or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        shown = action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)
        if '%(default)' in text or not shown or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f'{text} (default: %(default)s)'


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter`; every ``--name_with_underscores`` option is also
    accepted as ``--name-with-hyphens`` (the spelling of earlier versions of some tools), hidden from ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault('formatter_class', HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*names, **kwargs)
        aliases = [n.replace('_', '-') for n in names if n.startswith('--') and '_' in n]
        if aliases:
            hidden = dict(kwargs, dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            hidden.pop('required', None)
            super().add_argument(*aliases, **hidden)
        return action

    def add_decoding_options(self, prefix: str = '', default: str = 'checkpoint') -> None:
        """``--refine_iters N`` and ``--decode ar|nar`` (read by :func:`model_overrides`); ``prefix`` starts their
        help, e.g. the output format they apply to."""
        self.add_argument(
            '--refine_iters', type=int, default=None, help=f'{prefix}refinement iterations (default: {default})'
        )
        self.add_argument(
            '--decode', choices=('ar', 'nar'), default=None, help=f'{prefix}decoding (default: {default})'
        )

    def add_precision_option(self) -> None:
        # No argparse choices: they would import torch (strhub.device.PRECISIONS) before an argument error is shown;
        # strhub.device.autocast checks the name before any work starts.
        self.add_argument(
            '--precision',
            default='32',
            metavar='{32,bf16-mixed,16-mixed}',
            help='float32, or mixed precision: bf16-mixed (GPUs, CPUs with AVX512-BF16 or AMX), 16-mixed (GPUs)',
        )

    def add_second_look_option(
        self,
        help: str = 'read the words read with a confidence under BELOW (default 0.9) again from other views of their '
        'image',
    ) -> None:
        """``--second_look [BELOW]``: None when absent, 0.9 when given without a value
        (:mod:`strhub.models.second_look`)."""
        self.add_argument('--second_look', nargs='?', const=0.9, type=float, metavar='BELOW', help=help)

    def add_trust_option(self) -> None:
        self.add_argument(
            '--trust_checkpoint',
            action='store_true',
            help='load a checkpoint that pickles objects other than tensors and plain data, which can run code: '
            'only for files you trust',
        )

    def parse_known_items(self, argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
        """The options, and the arguments argparse did not take (paths and ``name:type=value`` items, which may come
        anywhere, even after the options); an unknown ``--flag`` is a usage error."""
        args, unknown = self.parse_known_args(argv)
        flags = [u for u in unknown if u.startswith('-') and len(u) > 1]
        if flags:
            self.error(f'unrecognized arguments: {" ".join(flags)}')
        return args, unknown


def _is_library_error(e: BaseException) -> bool:
    # The ValueError subclasses strhub defines (CheckpointError, ImageReadError, DeviceError, CLIPWeightsError, ...)
    # report bad input; any other exception is a bug and keeps its traceback.
    return isinstance(e, ValueError) and type(e).__module__.split('.')[0] == 'strhub'


def run_cli(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None, prog: str = '') -> NoReturn:
    """Runs ``main(argv)`` and exits with its return code; a ``CLIError`` or a library error becomes
    ``prog: error: message`` on stderr (exit code ``CLIError.exit_code``, 2 for library errors)."""
    name = f'{prog}: ' if prog else ''
    try:
        code = main(argv)
    except CLIError as e:
        print(f'{name}error: {e}', file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print(f'{name}interrupted', file=sys.stderr)
        code = 130
    except Exception as e:
        if not _is_library_error(e):
            raise
        print(f'{name}error: {e}', file=sys.stderr)
        code = 2
    sys.exit(code)


# --- Model arguments ---------------------------------------------------------------------------------------------


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


def split_paths_and_model_args(items: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Separates ``name:type=value`` items from paths (an existing file with such a name stays a path)."""
    paths, model_args = [], []
    for item in items:
        (model_args if is_model_arg(item) and not os.path.exists(item) else paths).append(item)
    return paths, model_args


# --- Charsets ----------------------------------------------------------------------------------------------------


def charset_arg(value: Optional[str], option: str = '--charset') -> Optional[str]:
    """The charset a CHARSET option names (a name, a file or the characters; None stays None); a bad one is a
    ``CLIError`` naming the option."""
    from strhub.data.charsets import charset_from_spec  # torch-free: the check comes before the heavy imports

    try:
        return charset_from_spec(value) if value is not None else None
    except ValueError as e:
        raise CLIError(f'{option}: {e}') from None


# --- Output files ------------------------------------------------------------------------------------------------


def check_writable(path: Path, label: str) -> None:
    """Raises ``CLIError('label: why')`` unless ``path`` can be written: not a directory, and a writable file or a new
    file whose nearest existing ancestor is a writable directory (missing directories are created on writing).
    Checked before any long work starts."""
    if path.is_dir():
        raise CLIError(f'{label}: is a directory')
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CLIError(f'{label}: {ancestor} is not a directory')
    if not (os.access(path, os.W_OK) if path.exists() else os.access(ancestor, os.W_OK | os.X_OK)):
        raise CLIError(f'{label}: permission denied')


# --- Checkpoints -------------------------------------------------------------------------------------------------


def _val_accuracy(name: str) -> Optional[float]:
    # Lightning names the best checkpoints '{epoch}-{step}-{val_accuracy:.4f}-{val_NED:.4f}', i.e.
    # 'epoch=3-step=100-val_accuracy=91.2345-val_NED=95.0000.ckpt'; the original reads the accuracy as
    # name.split('-')[-2].split('=')[-1].
    try:
        return float(name.split('-')[-2].split('=')[-1])
    except (IndexError, ValueError):
        return None


def resolve_checkpoint(path: Union[str, os.PathLike]) -> Path:
    """A checkpoint file, a directory of them (as written by training: ``checkpoints/``) or a model's name
    (shipped or released, see :mod:`strhub.pretrained`).

    For a directory, as the original: the file whose name contains ``val`` with the highest ``val_accuracy`` parsed
    from the name. Unlike the original, names that do not parse are ignored instead of crashing, and ``last.ckpt``
    is used when there is no such file.

    Raises:
        CLIError: the path does not exist, or the directory holds no usable checkpoint.
    """
    given, path = path, pretrained_path(path) or Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CLIError(not_found_message(given))
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


def open_reader(checkpoint: Path, trust: bool, model_kwargs: Dict[str, Any], **reader_options: Any):
    """A ``strhub.TextReader`` of a checkpoint or an ONNX export, every failure to open it a one-line ``CLIError``.

    An ONNX export goes to TextReader as a path, which refuses the options fixed at export (``model_kwargs``);
    a checkpoint is loaded with them.
    """
    from strhub.read import TextReader

    onnx = checkpoint.suffix.lower() == '.onnx'
    try:
        return TextReader(
            str(checkpoint) if onnx else load_model(checkpoint, trust=trust, **model_kwargs),
            **reader_options,
            **(model_kwargs if onnx else {}),
        )
    except ValueError as e:  # an invalid device or precision, an unusable ONNX file or options given with it
        raise CLIError(str(e)) from None
    except ImportError as e:
        if not onnx:
            raise
        raise CLIError(str(e)) from None  # onnxruntime missing: the message says how to install it


# --- Image paths -------------------------------------------------------------------------------------------------


def _walk(folder: Path, skipped: List[Tuple[str, str]]) -> List[Path]:
    """The non-hidden files under ``folder``, following symbolic links; folders reached a second time (link loops,
    links to a folder already searched) and folders that cannot be listed are added to ``skipped``."""
    files: List[Path] = []
    seen = {os.path.realpath(folder)}

    def cannot_list(e: OSError) -> None:
        skipped.append((str(e.filename), f'cannot list folder: {e.strerror}'))

    for root, dirs, names in os.walk(folder, onerror=cannot_list, followlinks=True):
        kept = []
        # Real folders before links, so that a folder linked from beside it is named by its own path.
        for d in sorted((d for d in dirs if not d.startswith('.')), key=lambda d: (os.path.islink(Path(root, d)), d)):
            real = os.path.realpath(Path(root, d))
            if real in seen:
                skipped.append((str(Path(root, d)), f'link to a folder already searched ({real})'))
            else:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
        files += [Path(root, n) for n in names if not n.startswith('.')]
    return files


def find_images(
    paths: Sequence[Union[str, os.PathLike]], extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> Tuple[List[Tuple[str, Path]], List[Tuple[str, str]]]:
    """Expands the files and folders given on the command line into the image files to read.

    Folders are searched recursively (the original read one folder, non-recursively), files with an image extension
    (case-insensitive) are kept, sorted by relative path; hidden files and folders are ignored. Symbolic links to
    files and folders are followed; broken links, folders reached a second time (link loops, two links to one
    folder) and folders that cannot be listed are skipped and reported. Files named explicitly are kept whatever
    their extension (decoding decides).

    Returns:
        ``(name, path)`` of the images, where the name is the path relative to its folder argument (the original
        printed the bare file name) or the path as given; and ``(path, reason)`` for what was skipped.
    """
    exts = tuple(e.lower() for e in extensions)
    found: List[Tuple[str, Path]] = []
    skipped: List[Tuple[str, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(_walk(p, skipped), key=lambda f: f.relative_to(p).as_posix()):
                if not f.exists():
                    skipped.append((str(f), 'broken symbolic link'))
                elif f.suffix.lower() in exts:
                    found.append((f.relative_to(p).as_posix(), f))
                else:
                    skipped.append((str(f), 'not an image file (extension)'))
        elif p.exists():
            found.append((str(p), p))
        else:
            skipped.append((str(p), 'broken symbolic link' if p.is_symlink() else 'no such file or directory'))
    return found, skipped
