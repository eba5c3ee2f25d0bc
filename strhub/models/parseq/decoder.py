"""PARSeq's two-stream (query / content) pre-LN decoder; CLIP4STR uses it twice (visual and cross-modal).

Attention runs on the parameters of ``nn.MultiheadAttention`` (the released checkpoints' names) through
``scaled_dot_product_attention``, so that keys and values are computed once and reused: the memory's for every call
on the same memory (:meth:`Decoder.memory_kv`: all decoding steps, refinement, a training step's permutations), the
context's for the later steps of autoregressive decoding (:meth:`Decoder.step`). The straightforward computation,
with the modules themselves and the whole prefix at every step, is kept in ``strhub.models.parseq.reference``: the
tests compare against it and ``tools/bench.py --reference`` times it.

:class:`CrossAttentionRecorder` recovers the query stream's cross-attention weights for visualisation
(``strhub.models.attention_maps``); when none is active decoding is unchanged.
"""

import copy
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Keys and values of one attention with the heads split: (N, H, S, D / H) each.
KV = Tuple[Tensor, Tensor]


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    n, length, d = x.shape
    return x.view(n, length, num_heads, d // num_heads).transpose(1, 2)


def project_kv(attn: nn.MultiheadAttention, x: Tensor) -> KV:
    """The keys and values ``attn`` computes from ``x`` (N, S, D)."""
    d, w, b = attn.embed_dim, attn.in_proj_weight, attn.in_proj_bias
    k = F.linear(x, w[d : 2 * d], b[d : 2 * d])
    v = F.linear(x, w[2 * d :], b[2 * d :])
    return _split_heads(k, attn.num_heads), _split_heads(v, attn.num_heads)


def attend(attn: nn.MultiheadAttention, x: Tensor, kv: KV, mask: Optional[Tensor] = None) -> Tensor:
    """``attn(x, keys, values)`` from precomputed keys and values; ``mask``: boolean (True: may attend), broadcast
    to (N, H, Lq, S)."""
    d = attn.embed_dim
    q = _split_heads(F.linear(x, attn.in_proj_weight[:d], attn.in_proj_bias[:d]), attn.num_heads)
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, dropout_p=dropout)
    n, _, length, _ = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, d))


class CrossAttentionRecorder:
    """While active (``with CrossAttentionRecorder() as rec:``), every decoder layer's query-stream cross-attention
    appends ``(layer, weights)`` to ``rec.weights``: the (N, H, Lq, S) softmax(q k^T / sqrt(d)) of the q and k that
    the layer used, recomputed in float32 beside the fused attention (which never materialises it).

    Recording goes through a module variable, so one recorder at a time, in one thread. Outside a ``with`` block
    the decoder only checks that variable: its outputs are bit-identical.

    Args:
        layers: record only these layers (default: all).
    """

    def __init__(self, layers: Optional[Sequence['DecoderLayer']] = None) -> None:
        self.weights: List[Tuple['DecoderLayer', Tensor]] = []
        self.layers = None if layers is None else {id(layer) for layer in layers}

    def __enter__(self) -> 'CrossAttentionRecorder':
        global _recorder
        if _recorder is not None:
            raise RuntimeError('a CrossAttentionRecorder is already active')
        _recorder = self
        return self

    def __exit__(self, *exc_info) -> None:
        global _recorder
        _recorder = None

    def record(self, layer: 'DecoderLayer', x: Tensor, memory: KV) -> None:
        if self.layers is not None and id(layer) not in self.layers:
            return
        attn = layer.cross_attn
        d = attn.embed_dim
        q = _split_heads(F.linear(x, attn.in_proj_weight[:d], attn.in_proj_bias[:d]), attn.num_heads)
        # The default scale of scaled_dot_product_attention: 1 / sqrt(head dim).
        scores = q.float() @ memory[0].float().transpose(-2, -1) / math.sqrt(q.shape[-1])
        self.weights.append((layer, scores.softmax(-1).detach()))


_recorder: Optional[CrossAttentionRecorder] = None


class ContextCache:
    """The context keys/values of one autoregressive decoding, per layer, filled one position per step."""

    def __init__(self, num_steps: int):
        self.num_steps = num_steps
        self.kv: List[KV] = []

    def put(self, layer: int, position: int, kv: KV) -> KV:
        """Stores position ``position`` of ``layer``; returns the keys/values of positions 0..position."""
        if layer == len(self.kv):  # allocated at the first step, in the dtype the layer computes in
            shape = (*kv[0].shape[:2], self.num_steps, kv[0].shape[3])
            self.kv.append((kv[0].new_empty(shape), kv[1].new_empty(shape)))
        end = position + 1
        for buffer, new in zip(self.kv[layer], kv):
            buffer[:, :, position:end] = new
        keys, values = self.kv[layer]
        return keys[:, :, :end], values[:, :, :end]


class DecoderLayer(nn.Module):
    """A pre-LN transformer decoder layer that updates a query stream (and a content stream).

    Names follow the released checkpoints: ``self_attn``, ``cross_attn``, ``linear1/2``,
    ``norm1/2`` (before cross-attention / MLP) and ``norm_q`` / ``norm_c`` (the two streams).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, layer_norm_eps: float = 1e-5):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm_q = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm_c = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def context_kv(self, content: Tensor) -> Tuple[Tensor, KV]:
        """The normed content and the self-attention keys/values both streams read from it."""
        content_norm = self.norm_c(content)
        return content_norm, project_kv(self.self_attn, content_norm)

    def forward_stream(
        self, tgt: Tensor, tgt_norm: Tensor, context: KV, memory: KV, mask: Optional[Tensor], record: bool = False
    ) -> Tensor:
        """One stream: self-attention over the (normed) content, cross-attention to memory, MLP. ``record``: the
        query stream, whose cross-attention an active :class:`CrossAttentionRecorder` stores."""
        tgt = tgt + self.dropout1(attend(self.self_attn, tgt_norm, context, mask))
        x = self.norm1(tgt)
        if record and _recorder is not None:
            _recorder.record(self, x, memory)
        tgt = tgt + self.dropout2(attend(self.cross_attn, x, memory))
        tgt2 = self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(tgt)))))
        return tgt + self.dropout3(tgt2)

    def forward(
        self,
        query: Tensor,
        content: Tensor,
        memory: KV,
        query_mask: Optional[Tensor] = None,
        content_mask: Optional[Tensor] = None,
        update_content: bool = True,
    ) -> Tuple[Tensor, Tensor]:
        content_norm, context = self.context_kv(content)
        query = self.forward_stream(query, self.norm_q(query), context, memory, query_mask, record=True)
        if update_content:
            content = self.forward_stream(content, content_norm, context, memory, content_mask)
        return query, content


class TokenEmbedding(nn.Module):
    """Token embedding scaled by sqrt(d_model)."""

    def __init__(self, charset_size: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(charset_size, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, tokens: Tensor) -> Tensor:
        return math.sqrt(self.embed_dim) * self.embedding(tokens)


def init_weights(module: nn.Module) -> None:
    """PARSeq's init of every submodule: trunc-normal(0.02) linears and embeddings, zero biases, unit norms, xavier
    attention in-projections."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=0.02)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention):
            nn.init.xavier_uniform_(m.in_proj_weight)
            nn.init.zeros_(m.in_proj_bias)


class Decoder(nn.Module):
    """Position-query decoder with its own token embedding, position queries and output head.

    Args:
        num_tokens: size of the token embedding table (``len(tokenizer)``).
        num_classes: output classes (``len(tokenizer) - 2``: ``[E]`` and the characters).
        max_len: number of position queries (``max_label_length + 1``).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        mlp_ratio: int,
        depth: int,
        dropout: float,
        num_tokens: int,
        num_classes: int,
        max_len: int,
    ):
        super().__init__()
        layer = DecoderLayer(d_model, nhead, d_model * mlp_ratio, dropout)
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(depth)])
        self.text_embed = TokenEmbedding(num_tokens, d_model)
        self.pos_queries = nn.Parameter(torch.empty(1, max_len, d_model))
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original init (:func:`init_weights`), and trunc-normal(0.02) position queries."""
        init_weights(self)
        nn.init.trunc_normal_(self.pos_queries, std=0.02)

    def memory_kv(self, memory: Tensor) -> List[KV]:
        """Each layer's cross-attention keys/values of ``memory`` (N, S, D), for any number of calls on it."""
        return [project_kv(layer.cross_attn, memory) for layer in self.layers]

    def embed_context(self, tokens: Tensor, start: int = 0) -> Tensor:
        """Content of context tokens at positions ``start``.. (N, L) -> (N, L, D): ``[B]`` (position 0) carries no
        position; the token at position k >= 1 gets position query k - 1."""
        emb = self.text_embed(tokens)
        if start == 0:
            return torch.cat([emb[:, :1], self.pos_queries[:, : tokens.shape[1] - 1] + emb[:, 1:]], dim=1)
        return self.pos_queries[:, start - 1 : start - 1 + tokens.shape[1]] + emb

    def forward(
        self,
        tgt: Tensor,
        memory: List[KV],
        tgt_query: Optional[Tensor] = None,
        tgt_query_mask: Optional[Tensor] = None,
        content_mask: Optional[Tensor] = None,
        content_key_padding_mask: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Decodes position queries against the content (token context) and memory.

        Args:
            tgt: (N, L) token ids starting with ``[B]``.
            memory: :meth:`memory_kv` of the (N, S, D) image (or image + text) tokens.
            tgt_query: (N, Lq, D) position queries; default all ``L`` first queries.
            tgt_query_mask: (Lq, L) float mask (0 / -inf).
            content_mask: (L, L) float mask for the content stream (used only when depth > 1).
            content_key_padding_mask: (N, L) bool, True where the context token is hidden.

        Returns:
            logits (N, Lq, C) and the normalised query features (N, Lq, D).
        """
        n, length = tgt.shape
        # Boolean masks (True: may attend) whatever the compute dtype (autocast).
        query_mask = tgt_query_mask == 0 if tgt_query_mask is not None else None
        content_mask = content_mask == 0 if content_mask is not None else None
        if content_key_padding_mask is not None:
            visible = ~content_key_padding_mask.view(n, 1, 1, length)
            query_mask = visible if query_mask is None else query_mask & visible
            content_mask = visible if content_mask is None else content_mask & visible
        content = self.dropout(self.embed_context(tgt))
        if tgt_query is None:
            tgt_query = self.pos_queries[:, :length].expand(n, -1, -1)
        query = self.dropout(tgt_query)
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            query, content = layer(query, content, memory[i], query_mask, content_mask, update_content=not last)
        out = self.norm(query)
        return self.head(out), out

    def step(self, position: int, token: Tensor, memory: List[KV], cache: 'ContextCache') -> Tensor:
        """One autoregressive step: the query at ``position`` reads the context tokens 0..position, of which ``token``
        (N, 1) is the newest; earlier ones come from ``cache``, which this step extends. Equals :meth:`forward` on the
        whole prefix with a causal mask (what the original runs at every step), at the cost of one position.

        Returns:
            logits (N, 1, C).
        """
        end = position + 1
        content = self.dropout(self.embed_context(token, position))
        query = self.dropout(self.pos_queries[:, position:end].expand(token.shape[0], -1, -1))
        for i, layer in enumerate(self.layers):
            content_norm, kv = layer.context_kv(content)
            context = cache.put(i, position, kv)
            query = layer.forward_stream(query, layer.norm_q(query), context, memory[i], None, record=True)
            if i < len(self.layers) - 1:  # the content stream's causal mask: position sees 0..position, all cached
                content = layer.forward_stream(content, content_norm, context, memory[i], None)
        return self.head(self.norm(query))
