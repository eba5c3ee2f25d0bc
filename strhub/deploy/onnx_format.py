"""What the exporter and the runtime agree on: file names, the metadata entry, the graphs' inputs and outputs, and
the errors. Imports neither onnx nor onnxruntime, so that raising an error needs neither.

An export is a main file ``NAME.onnx`` and beside it one file per further graph, ``NAME.ROLE.onnx``:

- ``NAME.onnx``, the image encoder: ``images`` (N, 3, H, W) float32 -> ``visual_k``, ``visual_v`` (the visual
  decoder's keys and values of the image tokens, (layers, N, heads, S, head_dim)) and, with the language model,
  ``image_k``, ``image_v`` (the cross-modal decoder's, of the image part of its memory);
- ``NAME.visual.onnx`` and ``NAME.cross.onnx``, one pass of a decoder: ``memory_k``, ``memory_v``, ``tokens`` (N, L)
  int64 context starting with [B], ``positions`` (Q,) int64 of the position queries, ``query_mask`` (Q, L) and
  ``content_mask`` (L, L) float (0 or -inf), ``padding`` (N, L) bool (True: hidden) -> ``logits`` (N, Q, C);
- ``NAME.text.onnx``, the text encoder: ``captions`` (N, context_length) int64 CLIP ids -> ``text_k``, ``text_v``
  (the cross-modal decoder's keys and values of the text part of its memory).

The host runs the loops between them (:mod:`strhub.deploy.onnx_runtime`): autoregressive steps with PyTorch's early
stop, refinements, captions.

The main file's metadata entry :data:`METADATA_KEY` holds a JSON object with what the runtime needs besides the
graphs (charsets, image size and normalisation, the options fixed at export, the other graphs' file names and SHA-256).
"""

import hashlib
import importlib
from pathlib import Path
from types import ModuleType
from typing import Union

METADATA_KEY = 'strhub'
FORMAT_VERSION = 2
# Opsets of the export: 17 has LayerNormalization; 20 is the newest the TorchScript exporter writes.
DEFAULT_OPSET, MAX_OPSET = 17, 20
# The install command of the optional dependencies, named by every message about them.
ONNX_EXTRA = "pip install -e '.[onnx]'"


class OnnxModelError(ValueError):
    """An exported model that cannot be used: missing, corrupt, not ours, a graph missing or changed, or
    options given that were fixed at export."""


def require(package: str, purpose: str) -> ModuleType:
    """Imports an optional package, or raises an ``ImportError`` that says how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ImportError(f'{purpose} needs {package}: {ONNX_EXTRA}') from None


def is_onnx_path(path: Union[str, 'Path']) -> bool:
    return str(path).lower().endswith('.onnx')


def graph_path(main: Union[str, Path], role: str) -> Path:
    """A graph of the export beside its main file: ``NAME.onnx`` -> ``NAME.ROLE.onnx``."""
    main = Path(main)
    return main.with_name(f'{main.name[: -len(".onnx")]}.{role}.onnx')


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
