"""Export of a CLIP4STR system to ONNX: one graph per stage of :meth:`CLIP4STR.forward_branches` (image encoder,
visual decoder, text encoder, cross-modal decoder), see :mod:`strhub.deploy.onnx_format` for the files.

The loops stay on the host (:mod:`strhub.deploy.onnx_runtime`), so that autoregressive decoding stops early as
PyTorch's does: a graph cannot skip the steps after every word has ended, and for short words those were most of
the work (tiny model, batch 1: twice the time of the whole reading). Each decoder graph is one pass over its inputs,
any context length and any set of position queries; the memory keys and values are projected once per image and
caption, in the encoder and text graphs, as in PyTorch.
"""

import io
import json
import os
import warnings
from pathlib import Path
from typing import List, Tuple, Union

import torch
from torch import Tensor, nn

from strhub import __version__
from strhub.deploy.onnx_format import (
    DEFAULT_OPSET,
    FORMAT_VERSION,
    MAX_OPSET,
    METADATA_KEY,
    graph_path,
    is_onnx_path,
    require,
    sha256,
)
from strhub.models.clip4str.model import CLIP4STR, concat_kv
from strhub.models.parseq import KV, Decoder

__all__ = ['export_onnx']

# The normalisation of TextReader and test.py (strhub.data.transforms.get_transform's default).
IMAGE_MEAN = IMAGE_STD = 0.5


def _stacked(kv: List[KV]) -> Tuple[Tensor, Tensor]:
    """Per-layer keys/values as two tensors (layers, N, heads, S, head_dim): graph inputs and outputs."""
    return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])


class EncoderGraph(nn.Module):
    """images -> each decoder's keys/values of the image tokens (the cross-modal decoder's: of its image part)."""

    def __init__(self, model: CLIP4STR) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        m = self.model
        memory = m.encode(images)
        outputs = _stacked(m.visual_decoder.memory_kv(memory))
        if m.cross_decoder is not None:
            outputs += _stacked(m.cross_decoder.memory_kv(m.cross_image(memory)))
        return outputs


class TextGraph(nn.Module):
    """CLIP token ids of the captions (N, context_length) -> the cross-modal decoder's keys/values of their text
    features (the text part of its memory)."""

    def __init__(self, model: CLIP4STR) -> None:
        super().__init__()
        self.model = model

    def forward(self, captions: Tensor) -> Tuple[Tensor, Tensor]:
        return _stacked(self.model.cross_decoder.memory_kv(self.model.encode_caption(captions)))


class DecoderGraph(nn.Module):
    """One decoder pass (:meth:`Decoder.forward`): the queries at ``positions`` read the context ``tokens`` and the
    memory keys/values under the given masks. Every decoding call is one: an autoregressive step (the newest
    position's query over the prefix, as the original computes it), single-pass decoding, a refinement."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, memory_k, memory_v, tokens, positions, query_mask, content_mask, padding) -> Tensor:
        memory = list(zip(memory_k.unbind(0), memory_v.unbind(0)))
        queries = self.decoder.pos_queries[0, positions].unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return self.decoder(tokens, memory, queries, query_mask, content_mask, padding)[0]


def _decoder_inputs(model: CLIP4STR, decoder: Decoder, kv: List[KV]) -> Tuple[Tensor, ...]:
    """Example inputs of a :class:`DecoderGraph` with context, query and memory lengths all different, so that the
    trace keeps them apart."""
    n, context, queries = kv[0][0].shape[0], 3, 5
    tokens = torch.randint(0, decoder.head.out_features, (n, context))
    tokens[:, 0] = model.tokenizer.bos_id
    mask = torch.zeros(queries, context)
    mask[0, -1] = float('-inf')
    return (
        *_stacked(kv),
        tokens,
        torch.arange(queries),
        mask,
        torch.zeros(context, context),
        torch.zeros(n, context, dtype=torch.bool),
    )


DECODER_INPUTS = ['memory_k', 'memory_v', 'tokens', 'positions', 'query_mask', 'content_mask', 'padding']
DECODER_AXES = {
    'memory_k': {1: 'batch', 3: 'memory'},
    'memory_v': {1: 'batch', 3: 'memory'},
    'tokens': {0: 'batch', 1: 'context'},
    'positions': {0: 'queries'},
    'query_mask': {0: 'queries', 1: 'context'},
    'content_mask': {0: 'context', 1: 'context'},
    'padding': {0: 'batch', 1: 'context'},
    'logits': {0: 'batch', 1: 'queries'},
}
KV_AXES = {1: 'batch', 3: 'memory'}


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
    cross = model.cross_decoder is not None
    kv_names = ['visual_k', 'visual_v'] + (['image_k', 'image_v'] if cross else [])
    # Eval mode for the wrappers too: torch.onnx.export leaves every submodule in the mode it found the wrapper in.
    encoder = EncoderGraph(model).eval()
    main = _to_onnx(
        encoder,
        (images,),
        ['images'],
        kv_names,
        {'images': {0: 'batch'}, **dict.fromkeys(kv_names, KV_AXES)},
        opset,
        check,
    )
    with torch.no_grad():
        memory = model.encode(images)
        visual_kv = model.visual_decoder.memory_kv(memory)
    graphs = {
        'visual': (
            DecoderGraph(model.visual_decoder),
            _decoder_inputs(model, model.visual_decoder, visual_kv),
            DECODER_INPUTS,
            ['logits'],
            DECODER_AXES,
        )
    }
    if cross:
        captions = model.bpe(['ab', 'c'] * (len(images) // 2))
        with torch.no_grad():
            cross_kv = concat_kv(
                model.cross_decoder.memory_kv(memory), model.cross_decoder.memory_kv(model.encode_caption(captions))
            )
        graphs['text'] = (
            TextGraph(model),
            (captions,),
            ['captions'],
            ['text_k', 'text_v'],
            {'captions': {0: 'batch'}, 'text_k': KV_AXES, 'text_v': KV_AXES},
        )
        graphs['cross'] = (
            DecoderGraph(model.cross_decoder),
            _decoder_inputs(model, model.cross_decoder, cross_kv),
            DECODER_INPUTS,
            ['logits'],
            DECODER_AXES,
        )
    files = {
        role: (graph_path(path, role), _to_onnx(g.eval(), args, ins, outs, axes, opset, check).SerializeToString())
        for role, (g, args, ins, outs, axes) in graphs.items()
    }
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
        'graphs': {role: {'file': f.name, 'sha256': sha256(data)} for role, (f, data) in files.items()},
    }
    entry = main.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, ensure_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    for f, data in files.values():  # first, so that a main file never names a graph that is not there yet
        _write_atomically(f, data)
    _write_atomically(path, main.SerializeToString())
    return [path] + [f for f, _ in files.values()]
