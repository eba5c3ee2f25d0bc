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
from strhub.models.parseq import causal_mask, cloze_mask

__all__ = ['OnnxRecognizer', 'onnx_providers']

KV = Tuple[np.ndarray, np.ndarray]  # keys, values: (layers, N, heads, S, head_dim)

REEXPORT_HINT = 're-export it with tools/export.py'
CPU = torch.device('cpu')  # the host's masks, as numpy arrays


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
        options = ort.SessionOptions()
        # The CPU threads of PyTorch (torch.set_num_threads), so that one setting governs both backends.
        options.intra_op_num_threads = torch.get_num_threads()
        # Idle workers sleep instead of spinning: the host works between the two graphs and between batches (image
        # decoding, captions), and spinning threads took its cores (batch 1, tiny model, 2 cores: 3x slower).
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        return ort.InferenceSession(data, options, providers=providers or ['CPUExecutionProvider'])
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no common base; all mean an unusable file
        summary = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxModelError(f'{path} is not a usable ONNX model ({summary})') from None


class OnnxRecognizer:
    """An exported CLIP4STR on onnxruntime: its graphs, and on the host the loops between them and the captions.

    Args:
        path: the main file ``NAME.onnx``; the other graphs of the export (``NAME.*.onnx``) must be beside it,
            unchanged.
        providers: onnxruntime execution providers (default: the CPU); see :func:`onnx_providers`. The sessions use
            as many CPU threads as PyTorch (``torch.set_num_threads``) at construction.

    Attributes:
        config: the export's metadata (charsets, ``img_size``, ``mean``/``std``, ``decode_ar``, ``refine_iters``, ...).

    Raises:
        OnnxModelError: a file is missing, unreadable, not a strhub export, or a graph is not the exported one.
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
        # Each further graph by its role ('visual', and with the language model 'text' and 'cross').
        self._graphs = {}
        for role, entry in self.config['graphs'].items():
            file = path.with_name(entry['file'])
            data = self._read(file, f'the {role} graph of {path}')
            if sha256(data) != entry['sha256']:
                raise OnnxModelError(
                    f'{file} is not the {role} graph exported with {path} (its SHA-256 differs); keep the files of '
                    f'one export together ({", ".join(e["file"] for e in self.config["graphs"].values())}), or '
                    + REEXPORT_HINT
                )
            session = _session(file, data, providers)
            # The exporter drops the inputs a graph does not read (content_mask with one decoder layer).
            self._graphs[role] = session, {i.name for i in session.get_inputs()}
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

    def _run(self, role: str, **feeds: np.ndarray) -> List[np.ndarray]:
        session, names = self._graphs[role]
        return session.run(None, {k: v for k, v in feeds.items() if k in names})

    def _decoder(self, role: str, kv: KV, tokens: np.ndarray, positions: np.ndarray, query_mask, content_mask, padding):
        """One pass of a decoder graph: logits (N, Q, C)."""
        k, v = kv
        return self._run(
            role,
            memory_k=k,
            memory_v=v,
            tokens=tokens,
            positions=positions,
            query_mask=query_mask,
            content_mask=content_mask,
            padding=padding,
        )[0]

    def decode(self, role: str, kv: KV, num_steps: int, stop_early: bool) -> np.ndarray:
        """:meth:`CLIP4STR.decode`: single-pass, or greedy autoregressive with the same early stop (every row has
        emitted [E]); each step is the newest position's query over the whole prefix, as the original computes it."""
        n = kv[0].shape[1]
        tokens = np.full((n, 1), self.tokenizer.bos_id, dtype=np.int64)
        if not self.config['decode_ar']:
            zeros = np.zeros((num_steps, 1), np.float32)
            return self._decoder(role, kv, tokens, np.arange(num_steps), zeros, zeros[:1], np.zeros((n, 1), bool))
        ended = np.zeros(n, dtype=bool)
        logits = []
        for i in range(num_steps):
            length = i + 1
            causal = causal_mask(length, CPU).numpy()
            step = self._decoder(role, kv, tokens, np.array([i]), causal[-1:], causal, np.zeros((n, length), bool))
            logits.append(step)
            if i + 1 < num_steps:
                token = step.argmax(-1)
                if stop_early:
                    ended |= token[:, 0] == self.tokenizer.eos_id
                    if ended.all():
                        break
                tokens = np.concatenate([tokens, token], axis=1)
        return np.concatenate(logits, axis=1)

    def refine(self, role: str, kv: KV, logits: np.ndarray, num_steps: int) -> np.ndarray:
        """:meth:`CLIP4STR.refine`: every position re-predicted from all the others, [E] onwards hidden."""
        bos = np.full((logits.shape[0], 1), self.tokenizer.bos_id, dtype=np.int64)
        tokens = np.concatenate([bos, logits[:, :-1].argmax(-1)], axis=1)
        length = tokens.shape[1]
        padding = np.cumsum(tokens == self.tokenizer.eos_id, axis=1) > 0
        cloze = cloze_mask(num_steps, CPU).numpy()
        return self._decoder(
            role, kv, tokens, np.arange(num_steps), cloze[:, :length], cloze[:length, :length], padding
        )

    def caption_tokens(self, visual_logits: np.ndarray) -> np.ndarray:
        """:meth:`CLIP4STR.caption_tokens` on the host: argmax strings in the test charset -> CLIP BPE ids."""
        probs = torch.from_numpy(visual_logits).float().softmax(-1)
        return self.bpe(self.tokenizer.decode_fast(probs, charset_adapter=self.charset_adapter)).numpy()

    def forward_branches(self, images: Union[Tensor, np.ndarray]) -> Tuple[Tensor, Tensor]:
        """(visual logits, final logits) of normalised images (N, 3, H, W): the stages and loops of
        :meth:`CLIP4STR.forward_branches`, with its early stop and its caption cache."""
        if isinstance(images, Tensor):
            images = images.detach().cpu().float().numpy()
        memory = self._main.run(None, {'images': np.ascontiguousarray(images, dtype=np.float32)})
        visual_kv = memory[0], memory[1]
        num_steps, refine_iters = self.num_steps, self.refine_iters
        visual = self.decode('visual', visual_kv, num_steps, stop_early=True)
        if 'cross' not in self._graphs:
            for _ in range(refine_iters):
                visual = self.refine('visual', visual_kv, visual, num_steps)
            return torch.from_numpy(visual), torch.from_numpy(visual)
        image_kv = memory[2], memory[3]
        tokens = self.caption_tokens(visual)
        text_kv = self._run('text', captions=tokens)

        def cross_kv() -> KV:
            return tuple(np.concatenate([a, b], axis=3) for a, b in zip(image_kv, text_kv))

        kv = cross_kv()
        cross = self.decode('cross', kv, visual.shape[1], stop_early=False)  # as many steps as the visual loop ran
        for _ in range(refine_iters):
            visual = self.refine('visual', visual_kv, visual, num_steps)
            new_tokens = self.caption_tokens(visual)
            changed = (new_tokens != tokens).any(-1)
            if changed.any():  # only the captions that refinement changed go through the text encoder again
                for old, new in zip(text_kv, self._run('text', captions=new_tokens[changed])):
                    old[:, changed] = new
                tokens = new_tokens
                kv = cross_kv()
            cross = self.refine('cross', kv, cross, num_steps)
        return torch.from_numpy(visual), torch.from_numpy(cross)

    def __call__(self, images: Union[Tensor, np.ndarray]) -> Tensor:
        """Final logits of normalised images (N, 3, H, W)."""
        return self.forward_branches(images)[1]

    def decode_logits(self, logits: Tensor) -> Tuple[List[str], List[float]]:
        """Strings and confidences, as ``BaseSystem.decode_logits``."""
        preds, probs = self.tokenizer.decode(logits.float().softmax(-1))
        return preds, [p.prod().item() for p in probs]
