"""Reading weight files without running code from them.

A ``.ckpt`` / ``.pt`` file is a pickle, and unpickling in full can call any function the file names. Files are
therefore read with ``torch.load(weights_only=True)``: tensors and plain Python data, plus, by name, the few other
types that real checkpoints hold (:data:`SAFE_GLOBALS`). Anything else is refused with :class:`UnsafeFileError`,
which names the types; a caller loads such a file in full only when the user says it is trusted.

OpenAI's CLIP files are TorchScript archives: a pickled module tree *and* the code of its classes, which
``torch.jit.load`` compiles and runs. :func:`torchscript_state_dict` reads their parameters and buffers without
compiling anything.
"""

import io
import os
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Set, Union

import torch
from torch import Tensor


class UnsafeFileError(ValueError):
    """A file that pickles objects beyond tensors and plain data: loading it in full can run code."""


class WeightsMismatchError(ValueError):
    """A state dict whose keys or shapes differ from the model's; callers re-raise it as their own error."""


class DiscardedObject:
    """Stands in for a pickled object that inference never uses, so it is neither built nor called.

    Checkpoints written with PyTorch < 2.4 pickle OneCycleLR's (and SWALR's) bound ``anneal_func`` in the scheduler
    state, and with it the scheduler and its optimizer (``builtins.getattr(<OneCycleLR>, '_annealing_cos')``);
    Lightning 1.x keeps the reduce functions of logged metrics (``torch.mean``, ...) in its loop state. Only the
    names below map here; anything else is refused. The original
    CLIP4STR's ``.ckpt`` releases were written so (PyTorch 1.12/1.13, Lightning 1.6). Resuming such a run still
    needs a trusted full load; reading its weights does not.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> 'DiscardedObject':
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _discarded_attribute(obj: Any, name: str) -> DiscardedObject:
    return DiscardedObject()


def _plain_dict(default_factory: Any = None) -> dict:
    """A ``defaultdict`` read back as a plain dict (its items follow; the factory is not needed to read them)."""
    return {}


_DISCARDED_NAMES = (
    'torch.optim.adamw.AdamW',
    'torch.optim.adam.Adam',
    'torch.optim.sgd.SGD',
    'torch.optim.lr_scheduler.OneCycleLR',
    'torch.optim.swa_utils.SWALR',
    'torch._C._VariableFunctionsClass',  # torch.mean pickles as getattr(<this class>, 'mean')
    'torch.mean',
    'torch.sum',
    'torch.max',
    'torch.min',
    'torchmetrics.utilities.data.dim_zero_cat',
    'torchmetrics.utilities.data.dim_zero_sum',
    'torchmetrics.utilities.data.dim_zero_mean',
    'torchmetrics.utilities.data.dim_zero_max',
    'torchmetrics.utilities.data.dim_zero_min',
)
# Lightning's hyper-parameter container (a dict with attribute access) in its 1.x and 2.x homes.
_ATTRIBUTE_DICTS = (
    'pytorch_lightning.utilities.parsing.AttributeDict',
    'lightning_fabric.utilities.data.AttributeDict',
    'lightning.fabric.utilities.data.AttributeDict',
    'lightning.pytorch.utilities.parsing.AttributeDict',
)
SAFE_GLOBALS: List[tuple] = [
    (_discarded_attribute, 'builtins.getattr'),
    *((DiscardedObject, name) for name in _DISCARDED_NAMES),
    *((dict, name) for name in _ATTRIBUTE_DICTS),
    (_plain_dict, 'collections.defaultdict'),  # an optimizer's ``state``
    (dict, 'builtins.dict'),  # its default factory
]


def load_weights_only(path: Union[str, Path], opt_in: str) -> Any:
    """``torch.load`` of tensors and plain data only (see :data:`SAFE_GLOBALS`), on the CPU.

    Args:
        path: the file.
        opt_in: how the user loads a trusted file in full, for the error message (e.g. ``'--trust_checkpoint'``).

    Raises:
        UnsafeFileError: the file pickles other objects (the message names them and ``opt_in``).
        Exception: whatever ``torch.load`` raises for an unreadable file.
    """
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        try:
            return torch.load(str(path), map_location='cpu', weights_only=True)
        except Exception as e:  # noqa: BLE001 - refusals are UnpicklingError, or errors of allow-listed types
            names = _unsafe_globals(path)
            if not names:
                raise
            raise UnsafeFileError(
                f'{path} pickles {", ".join(names)}, which is not a tensor or plain data: loading it in full can run '
                f'code. Only if you trust the file, load it with {opt_in}'
            ) from e


def error_summary(e: BaseException) -> str:
    """An exception of ``torch.load`` on one line. Weights-only refusals span paragraphs, and their advice (load
    with ``weights_only=False``) is what :class:`UnsafeFileError` words for the user; only the cause is kept."""
    text = str(e)
    cause = re.search(r'WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)', text, re.DOTALL)
    return f'{type(e).__name__}: {" ".join((cause.group(1) if cause else text).split())}'


def _unsafe_globals(path: Union[str, Path]) -> List[str]:
    """The names in a checkpoint's pickle that a weights-only load refuses (empty if none, or not a zip file)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - legacy or broken files: torch.load's own error is reported instead
        return []


def strip_module_prefix(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """The keys without the ``module.`` that a DDP / DataParallel wrapper puts before them."""
    return {k[len('module.') :] if k.startswith('module.') else k: v for k, v in state_dict.items()}


def load_state_dict_strict(module: torch.nn.Module, state_dict: Dict[str, Tensor], source: str) -> None:
    """``module.load_state_dict(strict=True)`` with one readable :class:`WeightsMismatchError` naming ``source``
    and the first offending keys, with both shapes for a shape mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f'{k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)}'
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    for name, keys in (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatch', mismatched)):
        if keys:
            sep = '; ' if keys is mismatched else ', '  # the shapes hold commas
            problems.append(f'{len(keys)} {name}: {sep.join(keys[:5])}{" ..." if len(keys) > 5 else ""}')
    if problems:
        raise WeightsMismatchError(f'{source} does not fit the model: ' + '; '.join(problems))
    module.load_state_dict(state_dict, strict=True)


def atomic_save(obj: Any, path: Union[str, Path]) -> Path:
    """``torch.save`` that never leaves a partial file at ``path``: the data goes to a temporary file in the same
    folder (so the final rename is atomic on any filesystem), is fsynced, then renamed over ``path``. A kill at any
    moment leaves either the previous file or the new one.

    Raises:
        OSError: the folder cannot be created or written (the previous file is untouched).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
    return path


def is_torchscript(path: Union[str, Path]) -> bool:
    """True for a TorchScript archive (``torch.jit.save``), as OpenAI's CLIP ``.pt`` files."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith('/constants.pkl') or '/code/' in n for n in z.namelist())


class _ScriptModule:
    """A pickled TorchScript module: its attributes, nothing built (the class is known by name only)."""

    qualname = ''

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.attributes = state if isinstance(state, dict) else {}  # a custom __getstate__: no tensors found


# ``class LayerNorm(Module):`` followed by its ``__parameters__ = [...]`` and ``__buffers__ = [...]`` lines.
_CLASS_RE = re.compile(
    r'^class (\w+)\(Module\):\n\s+__parameters__ = \[([^\]]*)\]\n\s+__buffers__ = \[([^\]]*)\]', re.MULTILINE
)


def torchscript_state_dict(path: Union[str, Path]) -> Dict[str, Tensor]:
    """The ``state_dict()`` of a TorchScript module archive, read without compiling or running its code.

    The module tree is unpickled with weights-only rules, every ``__torch__`` class standing in as a record of its
    attributes; which attributes are parameters and buffers is read from the class declarations in the archive's
    ``code/`` text (``__parameters__``/``__buffers__``), as ``torch.jit.load(path).state_dict()`` would return them.
    """
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        root = names[0].split('/')[0]
        tensors: Dict[str, List[str]] = {}
        for name in names:
            if name.startswith(f'{root}/code/') and name.endswith('.py'):
                module = name[len(root) + 1 : -3].replace('/', '.')[len('code.') :]
                for cls, params, buffers in _CLASS_RE.findall(z.read(name).decode('utf-8')):
                    tensors[f'{module}.{cls}'] = re.findall(r'"(\w+)"', params) + re.findall(r'"(\w+)"', buffers)
        # The pickle and tensor records alone, as a torch.save file; the code and constants stay behind.
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_STORED) as out:
            for name in names:
                rel = name[len(root) + 1 :]
                if rel in ('data.pkl', 'version', 'byteorder') or rel.startswith('data/'):
                    out.writestr(f'archive/{rel}', z.read(name))
        classes = _script_classes(z.read(f'{root}/data.pkl'))
    buffer.seek(0)
    stand_ins = [(type(q, (_ScriptModule,), {'qualname': q}), q) for q in classes]
    with torch.serialization.safe_globals(stand_ins):
        tree = torch.load(buffer, map_location='cpu', weights_only=True)
    state: Dict[str, Tensor] = {}

    def collect(module: _ScriptModule, prefix: str) -> None:
        for attr in tensors.get(module.qualname, ()):
            value = module.attributes.get(attr)
            if isinstance(value, Tensor):
                state[prefix + attr] = value.detach()
        for attr, value in module.attributes.items():
            if isinstance(value, _ScriptModule):
                collect(value, f'{prefix}{attr}.')

    if not isinstance(tree, _ScriptModule):
        raise ValueError(f'{path}: not a TorchScript module archive')
    collect(tree, '')
    return state


def _script_classes(pickle_bytes: bytes) -> Set[str]:
    """Names of the ``__torch__`` classes a TorchScript pickle refers to (read, not executed)."""
    found = set()
    for op, arg, _ in pickletools.genops(pickle_bytes):
        if op.name == 'GLOBAL' and arg.startswith('__torch__.'):
            module, name = arg.split(' ', 1)
            found.add(f'{module}.{name}')
    return found
