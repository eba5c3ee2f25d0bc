"""The decoder computed the straightforward way, as PARSeq and the original CLIP4STR compute it: the
``nn.MultiheadAttention`` modules themselves, memory keys/values projected again at every call. Not used for
decoding or training; kept as the reference that the tests compare :class:`~strhub.models.parseq.Decoder` against
and that ``tools/bench.py --reference`` times.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .decoder import Decoder, DecoderLayer


def _stream(
    layer: DecoderLayer, tgt: Tensor, tgt_norm: Tensor, tgt_kv: Tensor, memory: Tensor, mask, padding
) -> Tensor:
    tgt2 = layer.self_attn(tgt_norm, tgt_kv, tgt_kv, attn_mask=mask, key_padding_mask=padding, need_weights=False)[0]
    tgt = tgt + layer.dropout1(tgt2)
    tgt2 = layer.cross_attn(layer.norm1(tgt), memory, memory, need_weights=False)[0]
    tgt = tgt + layer.dropout2(tgt2)
    tgt2 = layer.linear2(layer.dropout(F.gelu(layer.linear1(layer.norm2(tgt)))))
    return tgt + layer.dropout3(tgt2)


def decoder_forward(
    decoder: Decoder,
    tgt: Tensor,
    memory: Tensor,
    tgt_query: Optional[Tensor] = None,
    tgt_query_mask: Optional[Tensor] = None,
    content_mask: Optional[Tensor] = None,
    content_key_padding_mask: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """:meth:`Decoder.forward` on the memory tokens (N, S, D) themselves: the same arguments and results."""
    n, length = tgt.shape
    padding = content_key_padding_mask
    if padding is not None and padding.dtype == torch.bool:  # what MHA would convert it to, without its warning
        padding = torch.zeros_like(padding, dtype=memory.dtype).masked_fill(padding, float('-inf'))
    null_ctx = decoder.text_embed(tgt[:, :1])
    tgt_emb = decoder.pos_queries[:, : length - 1] + decoder.text_embed(tgt[:, 1:])
    content = decoder.dropout(torch.cat([null_ctx, tgt_emb], dim=1))
    if tgt_query is None:
        tgt_query = decoder.pos_queries[:, :length].expand(n, -1, -1)
    query = decoder.dropout(tgt_query)
    for i, layer in enumerate(decoder.layers):
        query_norm, content_norm = layer.norm_q(query), layer.norm_c(content)
        new_query = _stream(layer, query, query_norm, content_norm, memory, tgt_query_mask, padding)
        if i < len(decoder.layers) - 1:
            content = _stream(layer, content, content_norm, content_norm, memory, content_mask, padding)
        query = new_query
    out = decoder.norm(query)
    return decoder.head(out), out
