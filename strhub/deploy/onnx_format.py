"""What the exporter and the runtime agree on: file names, the metadata entry, the graphs' inputs and outputs, and
the errors. Imports neither onnx nor onnxruntime, so that raising an error needs neither.

An export is a main file ``NAME.onnx`` and, for models with the language model, ``NAME.cross.onnx``:

- main graph: ``images`` (N, 3, H, W) float32 -> ``memory`` (N, S, D) and ``visual_logits`` (R + 1, N, T, C): the
  visual decoding over all T = max_label_length + 1 positions, then after each of the R refinements;
- cross graph: ``memory``, ``captions`` (R + 1, N, context_length) int64 CLIP ids of each visual prediction, and
  ``steps`` () int64, the length the visual decoding stopped at -> ``logits`` (N, T, C).

The main file's metadata entry :data:`METADATA_KEY` holds a JSON object with what the runtime needs besides the
graphs (charsets, image size and normalisation, the options fixed at export, the cross graph's name and SHA-256).
"""

import hashlib
import importlib
from pathlib import Path
from types import ModuleType
from typing import Union

METADATA_KEY = 'strhub'
FORMAT_VERSION = 1
# Opsets of the export: 17 has LayerNormalization; 20 is the newest the TorchScript exporter writes.
DEFAULT_OPSET, MAX_OPSET = 17, 20
# The install command of the optional dependencies, named by every message about them.
ONNX_EXTRA = "pip install -e '.[onnx]'"


class OnnxModelError(ValueError):
    """An exported model that cannot be used: missing, corrupt, not ours, its cross graph missing or changed, or
    options given that were fixed at export."""


def require(package: str, purpose: str) -> ModuleType:
    """Imports an optional package, or raises an ``ImportError`` that says how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ImportError(f'{purpose} needs {package}: {ONNX_EXTRA}') from None


def is_onnx_path(path: Union[str, 'Path']) -> bool:
    return str(path).lower().endswith('.onnx')


def cross_path(main: Union[str, Path]) -> Path:
    """The cross graph beside the main file: ``NAME.onnx`` -> ``NAME.cross.onnx``."""
    main = Path(main)
    return main.with_name(f'{main.name[: -len(".onnx")]}.cross.onnx')


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
