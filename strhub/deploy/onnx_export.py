"""Export of a CLIP4STR system to ONNX: two graphs around the one step that stays on the host (captions: argmax
strings -> CLIP BPE ids), see :mod:`strhub.deploy.onnx_format` for the files.

The graphs compute what :meth:`CLIP4STR.forward_branches` computes, with fixed shapes where PyTorch's vary with the
data, and the host recovers PyTorch's shapes (:mod:`strhub.deploy.onnx_runtime`):

- decoding runs all T = max_label_length + 1 positions, never stopping early. By causality the first L positions
  equal PyTorch's after an early stop at length L, and every row then holds an [E] within them, so a refinement over
  all T positions sees the same context (its padding hides everything from the first [E] on) and gives the same
  logits as PyTorch's over L;
- the cross-modal decoding runs T positions too; PyTorch's runs L (``steps``), so before the first cross-modal
  refinement the prediction at positions >= L - 1 is forced to [E], which hides the context from position L on as
  PyTorch's shorter context does.
"""

import io
import json
import os
import warnings
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from strhub import __version__
from strhub.deploy.onnx_format import (
    DEFAULT_OPSET,
    FORMAT_VERSION,
    MAX_OPSET,
    METADATA_KEY,
    cross_path,
    is_onnx_path,
    require,
    sha256,
)
from strhub.models.clip4str.model import CLIP4STR, concat_kv
from strhub.models.parseq import KV, Decoder

__all__ = ['export_onnx']

# The normalisation of TextReader and test.py (strhub.data.transforms.get_transform's default).
IMAGE_MEAN = IMAGE_STD = 0.5


class _ConcatCache:
    """The interface of :class:`~strhub.models.parseq.ContextCache`, growing by concatenation: traces to Concat
    nodes instead of in-place writes into a preallocated buffer."""

    def __init__(self) -> None:
        self.kv: List[KV] = []

    def put(self, layer: int, position: int, kv: KV) -> KV:
        if layer == len(self.kv):
            self.kv.append(kv)
        else:
            self.kv[layer] = tuple(torch.cat([old, new], dim=2) for old, new in zip(self.kv[layer], kv))
        return self.kv[layer]


def _decode_all(model: CLIP4STR, decoder: Decoder, memory: List[KV]) -> Tensor:
    """:meth:`CLIP4STR.decode` over all positions without an early stop: (N, T, C)."""
    num_steps = model.max_label_length + 1
    # [B] of the memory's batch size, as a graph value (a traced Python int would fix the batch size).
    bos = torch.full_like(memory[0][0][:, 0, :1, 0], model.tokenizer.bos_id, dtype=torch.long)
    if not model.decode_ar:
        return decoder(bos, memory, decoder.pos_queries[:, :num_steps].expand(bos.shape[0], -1, -1))[0]
    cache, logits, token = _ConcatCache(), [], bos
    for i in range(num_steps):
        logits.append(decoder.step(i, token, memory, cache))
        token = logits[-1].argmax(-1)
    return torch.cat(logits, dim=1)


class VisualGraph(nn.Module):
    """The main graph: images -> (memory, the visual logits after decoding and after each refinement)."""

    def __init__(self, model: CLIP4STR) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        m = self.model
        memory = m.encode(images)
        kv = m.visual_decoder.memory_kv(memory)
        logits = [_decode_all(m, m.visual_decoder, kv)]
        for _ in range(m.refine_iters):
            logits.append(m.refine(m.visual_decoder, logits[-1], kv, m.max_label_length + 1))
        return memory, torch.stack(logits)


class CrossGraph(nn.Module):
    """The cross graph: (memory, the captions of each visual prediction, the decoding length) -> final logits."""

    def __init__(self, model: CLIP4STR) -> None:
        super().__init__()
        self.model = model
        num_classes = model.cross_decoder.head.out_features
        self.register_buffer('eos', nn.functional.one_hot(torch.tensor(model.tokenizer.eos_id), num_classes).float())

    def forward(self, memory: Tensor, captions: Tensor, steps: Tensor) -> Tensor:
        m, decoder = self.model, self.model.cross_decoder
        num_steps = m.max_label_length + 1
        image_kv = decoder.memory_kv(m.cross_image(memory))
        # Every caption set through the text encoder in one batch.
        text = m.encode_caption(captions.flatten(0, 1)).to(memory.dtype)
        text = text.view(captions.shape[0], captions.shape[1], captions.shape[2], -1)
        logits = _decode_all(m, decoder, concat_kv(image_kv, decoder.memory_kv(text[0])))
        if m.refine_iters:
            hidden = torch.arange(num_steps, device=memory.device) >= steps - 1
            logits = torch.where(hidden[:, None], self.eos, logits)
        for k in range(1, m.refine_iters + 1):
            logits = m.refine(decoder, logits, concat_kv(image_kv, decoder.memory_kv(text[k])), num_steps)
        return logits


def _write_atomically(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then renames it over ``path`` (never a partial file)."""
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _to_onnx(module: nn.Module, args: Tuple[Tensor, ...], inputs, outputs, dynamic_axes, opset: int, check: bool):
    """The ModelProto of ``module`` traced on ``args`` (TorchScript exporter: seconds where the dynamo exporter
    takes minutes on the unrolled decoding loops)."""
    onnx = require('onnx', 'ONNX export')
    buffer = io.BytesIO()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # The fused inference kernel of nn.MultiheadAttention (CLIP's towers) has no ONNX form.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        # The tracer warns of shape checks it fixes as constants; the parity tests run every export at several batch
        # sizes.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            torch.onnx.export(
                module,
                args,
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic_axes,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    proto = onnx.load_from_string(buffer.getvalue())
    if check:
        onnx.checker.check_model(proto)
    return proto


def export_onnx(
    system: nn.Module, path: Union[str, os.PathLike], opset: int = DEFAULT_OPSET, check: bool = True
) -> List[Path]:
    """Exports a CLIP4STR system (e.g. from ``load_from_checkpoint``) for onnxruntime, with a dynamic batch size.

    Its current options are fixed in the export: ``decode_ar``, ``refine_iters``, ``charset_test`` (it shapes the
    captions). The system is moved to the CPU in float32 and eval mode. Files are replaced atomically.

    Args:
        path: the main file, ``NAME.onnx``; with the language model also ``NAME.cross.onnx`` is written.
        opset: ONNX opset, ``DEFAULT_OPSET`` (17) to ``MAX_OPSET`` (20).
        check: run ``onnx.checker`` on the graphs.

    Returns:
        The files written: the main file, then the cross graph if any.
    """
    path = Path(path)
    if not is_onnx_path(path):
        raise ValueError(f'an ONNX export is a .onnx file, got {path}')
    if not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f'opset must be {DEFAULT_OPSET} to {MAX_OPSET}, got {opset}')
    system = system.to('cpu', torch.float32).eval()
    model: CLIP4STR = system.model
    img_size = [int(s) for s in system.hparams.img_size]
    # A batch of 2, so that nothing in the trace can take the batch size for a constant 1.
    images = torch.randn(2, 3, *img_size)
    # Eval mode for the wrappers too: torch.onnx.export leaves every submodule in the mode it found the wrapper in.
    visual_graph = VisualGraph(model).eval()
    with torch.no_grad():
        memory, visual = visual_graph(images)
    main = _to_onnx(
        visual_graph,
        (images,),
        ['images'],
        ['memory', 'visual_logits'],
        {'images': {0: 'batch'}, 'memory': {0: 'batch'}, 'visual_logits': {1: 'batch'}},
        opset,
        check,
    )
    cross: Optional[Tuple[Path, bytes]] = None
    if model.cross_decoder is not None:
        captions = torch.stack([model.caption_tokens(v) for v in visual])
        steps = torch.tensor(model.max_label_length + 1)
        proto = _to_onnx(
            CrossGraph(model).eval(),
            (memory, captions, steps),
            ['memory', 'captions', 'steps'],
            ['logits'],
            {'memory': {0: 'batch'}, 'captions': {1: 'batch'}, 'logits': {0: 'batch'}},
            opset,
            check,
        )
        cross = cross_path(path), proto.SerializeToString()
    meta = {
        'format': FORMAT_VERSION,
        'exporter': f'strhub {__version__}, torch {torch.__version__}',
        'charset_train': model.tokenizer.charset,
        'charset_test': model.charset_test,
        'max_label_length': model.max_label_length,
        'img_size': img_size,
        'mean': IMAGE_MEAN,
        'std': IMAGE_STD,
        'decode_ar': model.decode_ar,
        'refine_iters': model.refine_iters,
        'context_length': model.bpe.context_length,
        'cross': None if cross is None else {'file': cross[0].name, 'sha256': sha256(cross[1])},
    }
    entry = main.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, ensure_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    if cross is not None:  # first, so that a main file never names a cross graph that is not there yet
        _write_atomically(*cross)
        written.append(cross[0])
    _write_atomically(path, main.SerializeToString())
    return written
