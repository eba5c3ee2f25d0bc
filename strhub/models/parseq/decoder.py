"""PARSeq's two-stream (query / content) pre-LN decoder; CLIP4STR uses it twice (visual and cross-modal)."""

import copy
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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

    def forward_stream(
        self,
        tgt: Tensor,
        tgt_norm: Tensor,
        tgt_kv: Tensor,
        memory: Tensor,
        tgt_mask: Optional[Tensor],
        tgt_key_padding_mask: Optional[Tensor],
    ) -> Tensor:
        """One stream: self-attention over the (normed) content, cross-attention to memory, MLP."""
        tgt2 = self.self_attn(
            tgt_norm, tgt_kv, tgt_kv, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask, need_weights=False
        )[0]
        tgt = tgt + self.dropout1(tgt2)
        tgt2 = self.cross_attn(self.norm1(tgt), memory, memory, need_weights=False)[0]
        tgt = tgt + self.dropout2(tgt2)
        tgt2 = self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(tgt)))))
        return tgt + self.dropout3(tgt2)

    def forward(
        self,
        query: Tensor,
        content: Tensor,
        memory: Tensor,
        query_mask: Optional[Tensor] = None,
        content_mask: Optional[Tensor] = None,
        content_key_padding_mask: Optional[Tensor] = None,
        update_content: bool = True,
    ) -> Tuple[Tensor, Tensor]:
        query_norm = self.norm_q(query)
        content_norm = self.norm_c(content)
        query = self.forward_stream(query, query_norm, content_norm, memory, query_mask, content_key_padding_mask)
        if update_content:
            content = self.forward_stream(
                content, content_norm, content_norm, memory, content_mask, content_key_padding_mask
            )
        return query, content


class TokenEmbedding(nn.Module):
    """Token embedding scaled by sqrt(d_model)."""

    def __init__(self, charset_size: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(charset_size, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, tokens: Tensor) -> Tensor:
        return math.sqrt(self.embed_dim) * self.embedding(tokens)


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
        """The original init: trunc-normal(0.02) linears/embeddings/queries, zero biases, unit norms."""
        for m in self.modules():
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
        nn.init.trunc_normal_(self.pos_queries, std=0.02)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_query: Optional[Tensor] = None,
        tgt_query_mask: Optional[Tensor] = None,
        content_mask: Optional[Tensor] = None,
        content_key_padding_mask: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Decodes position queries against the content (token context) and memory.

        Args:
            tgt: (N, L) token ids starting with ``[B]``.
            memory: (N, S, D) image (or image + text) tokens.
            tgt_query: (N, Lq, D) position queries; default all ``L`` first queries.
            tgt_query_mask: (Lq, L) float mask (0 / -inf).
            content_mask: (L, L) float mask for the content stream (used only when depth > 1).
            content_key_padding_mask: (N, L) bool, True where the context token is hidden.

        Returns:
            logits (N, Lq, C) and the normalised query features (N, Lq, D).
        """
        n, length = tgt.shape
        if content_key_padding_mask is not None and content_key_padding_mask.dtype == torch.bool:
            # Same numbers as letting MHA convert it, without its mixed-mask-types warning.
            content_key_padding_mask = torch.zeros_like(content_key_padding_mask, dtype=memory.dtype).masked_fill(
                content_key_padding_mask, float('-inf')
            )
        # [B] carries no position; token k >= 1 gets position query k - 1.
        null_ctx = self.text_embed(tgt[:, :1])
        tgt_emb = self.pos_queries[:, : length - 1] + self.text_embed(tgt[:, 1:])
        content = self.dropout(torch.cat([null_ctx, tgt_emb], dim=1))
        if tgt_query is None:
            tgt_query = self.pos_queries[:, :length].expand(n, -1, -1)
        query = self.dropout(tgt_query)
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            query, content = layer(
                query, content, memory, tgt_query_mask, content_mask, content_key_padding_mask, update_content=not last
            )
        out = self.norm(query)
        return self.head(out), out
