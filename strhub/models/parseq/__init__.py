"""PARSeq's building blocks (Bautista & Atienza, ECCV 2022), shared by the models that decode with them: the
two-stream decoder, permuted sequence modelling and the attention masks of decoding."""

from .decoder import KV, ContextCache, Decoder, DecoderLayer
from .perm import causal_mask, cloze_mask, gen_tgt_perms, generate_attn_masks

__all__ = [
    'KV',
    'ContextCache',
    'Decoder',
    'DecoderLayer',
    'causal_mask',
    'cloze_mask',
    'gen_tgt_perms',
    'generate_attn_masks',
]
