"""Inference on an ONNX export (:mod:`strhub.deploy.onnx_export`) with onnxruntime, giving the logits, strings and
confidences of the PyTorch model it was exported from.

Example::

    from strhub.deploy.onnx_runtime import OnnxRecognizer

    recognizer = OnnxRecognizer('clip4str_tiny.onnx')
    texts, confidences = recognizer.decode_logits(recognizer(images))  # images: (N, 3, H, W) normalised

``strhub.TextReader('model.onnx')`` wraps this with the image loading and preprocessing.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from strhub.data.utils import CharsetAdapter, Tokenizer
from strhub.deploy.onnx_format import FORMAT_VERSION, METADATA_KEY, OnnxModelError, require, sha256
from strhub.models.clip import BpeTokenizer

__all__ = ['OnnxRecognizer', 'onnx_providers']

REEXPORT_HINT = 're-export it with tools/export.py'


def onnx_providers(device: torch.device) -> List[str]:
    """onnxruntime execution providers for a torch device: CUDA (when this onnxruntime has it) for CUDA devices,
    else the CPU."""
    ort = require('onnxruntime', 'reading .onnx models')
    if device.type == 'cuda' and 'CUDAExecutionProvider' in ort.get_available_providers():
        return ['CUDAExecutionProvider', 'CPUExecutionProvider']
    return ['CPUExecutionProvider']


def _session(path: Path, data: bytes, providers: Optional[Sequence[str]]):
    ort = require('onnxruntime', 'reading .onnx models')
    try:
        return ort.InferenceSession(data, providers=providers or ['CPUExecutionProvider'])
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no common base; all mean an unusable file
        summary = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxModelError(f'{path} is not a usable ONNX model ({summary})') from None


class OnnxRecognizer:
    """An exported CLIP4STR on onnxruntime: the two graphs and, between them, the captions on the host.

    Args:
        path: the main file ``NAME.onnx``; its cross graph (``NAME.cross.onnx``) must be beside it, unchanged.
        providers: onnxruntime execution providers (default: the CPU); see :func:`onnx_providers`.

    Attributes:
        config: the export's metadata (charsets, ``img_size``, ``mean``/``std``, ``decode_ar``, ``refine_iters``, ...).

    Raises:
        OnnxModelError: a file is missing, unreadable, not a strhub export, or the cross graph is not the exported one.
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, path: Union[str, Path], providers: Optional[Sequence[str]] = None) -> None:
        require('onnxruntime', 'reading .onnx models')
        path = Path(path)
        self.path = path
        self._main = _session(path, self._read(path, 'ONNX model'), providers)
        raw = self._main.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise OnnxModelError(f'{path} is an ONNX model but not a strhub export (no {METADATA_KEY!r} metadata)')
        try:
            self.config: Dict[str, Any] = json.loads(raw)
        except ValueError:
            raise OnnxModelError(f'{path}: unreadable {METADATA_KEY!r} metadata; {REEXPORT_HINT}') from None
        if self.config.get('format') != FORMAT_VERSION:
            raise OnnxModelError(
                f'{path} is in export format {self.config.get("format")!r}, this version reads {FORMAT_VERSION}; '
                + REEXPORT_HINT
            )
        self._cross = None
        cross = self.config['cross']
        if cross is not None:
            cross_file = path.with_name(cross['file'])
            data = self._read(cross_file, f'the cross-modal graph of {path}')
            if sha256(data) != cross['sha256']:
                raise OnnxModelError(
                    f'{cross_file} is not the cross-modal graph exported with {path} (its SHA-256 differs); '
                    f'copy both files of one export, or {REEXPORT_HINT}'
                )
            self._cross = _session(cross_file, data, providers)
        self.tokenizer = Tokenizer(self.config['charset_train'])
        self.charset_adapter = CharsetAdapter(self.config['charset_test'])
        self.bpe = BpeTokenizer(self.config['context_length'])
        self.num_steps = self.config['max_label_length'] + 1
        self.refine_iters: int = self.config['refine_iters']
        self.img_size: Tuple[int, int] = tuple(self.config['img_size'])

    @staticmethod
    def _read(path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise OnnxModelError(f'{what} not found: {path}') from None
        except OSError as e:
            raise OnnxModelError(f'cannot read {what} {path}: {e.strerror or e}') from None

    @property
    def providers(self) -> List[str]:
        return self._main.get_providers()

    def decoded_length(self, visual_logits: np.ndarray) -> int:
        """Positions PyTorch's visual decoding runs on (N, T, C) logits: autoregressive decoding stops after the
        first step i < T - 1 by which every row has predicted [E]; single-pass decoding runs all T."""
        if not self.config['decode_ar']:
            return self.num_steps
        ended = np.logical_or.accumulate(visual_logits.argmax(-1) == self.tokenizer.eos_id, axis=1).all(0)
        stops = np.flatnonzero(ended[:-1])
        return int(stops[0]) + 1 if stops.size else self.num_steps

    def caption_tokens(self, visual_logits: Tensor) -> np.ndarray:
        """:meth:`CLIP4STR.caption_tokens` on the host: argmax strings in the test charset -> CLIP BPE ids."""
        captions = self.tokenizer.decode_fast(visual_logits.float().softmax(-1), charset_adapter=self.charset_adapter)
        return self.bpe(captions).numpy().astype(np.int64)

    def forward_branches(self, images: Union[Tensor, np.ndarray]) -> Tuple[Tensor, Tensor]:
        """(visual logits, final logits) of normalised images (N, 3, H, W), as :meth:`CLIP4STR.forward_branches`:
        (N, L, C) where PyTorch stops early at length L and refines nothing, else (N, T, C)."""
        if isinstance(images, Tensor):
            images = images.detach().cpu().float().numpy()
        memory, visual = self._main.run(None, {'images': np.ascontiguousarray(images, dtype=np.float32)})
        length = self.decoded_length(visual[0])
        steps = [torch.from_numpy(visual[0][:, :length])] + [torch.from_numpy(v) for v in visual[1:]]
        if self._cross is None:
            return steps[-1], steps[-1]
        feeds = {
            'memory': memory,
            'captions': np.stack([self.caption_tokens(v) for v in steps]),
            'steps': np.array(length, dtype=np.int64),
        }
        # Inputs a graph does not read are not in it (``steps`` without refinement).
        names = {i.name for i in self._cross.get_inputs()}
        logits = torch.from_numpy(self._cross.run(None, {k: v for k, v in feeds.items() if k in names})[0])
        return steps[-1], logits if self.refine_iters else logits[:, :length]

    def __call__(self, images: Union[Tensor, np.ndarray]) -> Tensor:
        """Final logits of normalised images (N, 3, H, W)."""
        return self.forward_branches(images)[1]

    def decode_logits(self, logits: Tensor) -> Tuple[List[str], List[float]]:
        """Strings and confidences, as ``BaseSystem.decode_logits``."""
        preds, probs = self.tokenizer.decode(logits.float().softmax(-1))
        return preds, [p.prod().item() for p in probs]
