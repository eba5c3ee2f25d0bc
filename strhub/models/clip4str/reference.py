"""CLIP4STR computed the straightforward way, as the original computes it: autoregressive loops that run the
decoder over the whole prefix at every step (:func:`strhub.models.parseq.reference.decoder_forward`, which also
projects the memory again at every call), the text encoder once per caption use. Not used for decoding or training;
kept as the reference that the tests compare the model's own computation against (equal outputs, losses and
gradients) and that ``tools/bench.py --reference`` times.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from strhub.models.clip import encode_text
from strhub.models.parseq import Decoder, causal_mask, cloze_mask, generate_attn_masks
from strhub.models.parseq.reference import decoder_forward

from .model import CLIP4STR
from .system import CLIP4STRSystem, permutation_loss


def _cross_memory(model: CLIP4STR, memory: Tensor, visual_logits: Tensor) -> Tensor:
    image = memory.detach() if model.image_detach else memory
    text = encode_text(model.clip_model, model.caption_tokens(visual_logits))
    return torch.cat([image, text.to(image.dtype)], dim=1)


def _ar_decode(model: CLIP4STR, decoder: Decoder, memory: Tensor, num_steps: int, stop_early: bool) -> Tensor:
    tok = model.tokenizer
    n = memory.shape[0]
    tgt_in = torch.full((n, num_steps), tok.pad_id, dtype=torch.long, device=memory.device)
    tgt_in[:, 0] = tok.bos_id
    pos_queries = decoder.pos_queries[:, :num_steps].expand(n, -1, -1)
    mask = causal_mask(num_steps, memory.device)
    logits = []
    for i in range(num_steps):
        j = i + 1
        step_logits = decoder_forward(decoder, tgt_in[:, :j], memory, pos_queries[:, i:j], mask[i:j, :j], mask[:j, :j])[
            0
        ]
        logits.append(step_logits)
        if j < num_steps:
            tgt_in[:, j] = step_logits.squeeze(1).argmax(-1)
            if stop_early and (tgt_in == tok.eos_id).any(dim=-1).all():
                break
    return torch.cat(logits, dim=1)


def _decode(model: CLIP4STR, decoder: Decoder, memory: Tensor, num_steps: int, stop_early: bool) -> Tensor:
    if model.decode_ar:
        return _ar_decode(model, decoder, memory, num_steps, stop_early)
    n = memory.shape[0]
    bos = torch.full((n, 1), model.tokenizer.bos_id, dtype=torch.long, device=memory.device)
    return decoder_forward(decoder, bos, memory, decoder.pos_queries[:, :num_steps].expand(n, -1, -1))[0]


def _refine(model: CLIP4STR, decoder: Decoder, logits: Tensor, memory: Tensor, num_steps: int) -> Tensor:
    n = logits.shape[0]
    bos = torch.full((n, 1), model.tokenizer.bos_id, dtype=torch.long, device=logits.device)
    tgt_in = torch.cat([bos, logits[:, :-1].argmax(-1)], dim=1)
    length = tgt_in.shape[1]
    padding = (tgt_in == model.tokenizer.eos_id).int().cumsum(-1) > 0
    mask = cloze_mask(num_steps, logits.device)
    pos_queries = decoder.pos_queries[:, :num_steps].expand(n, -1, -1)
    return decoder_forward(decoder, tgt_in, memory, pos_queries, mask[:, :length], mask[:length, :length], padding)[0]


def forward_branches(model: CLIP4STR, images: Tensor, max_length: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """:meth:`CLIP4STR.forward_branches`, computed as the original does: (visual logits, final logits)."""
    stop_early = max_length is None
    max_length = model.max_label_length if max_length is None else min(max_length, model.max_label_length)
    num_steps = max_length + 1
    memory = model.encode(images)
    visual_logits = _decode(model, model.visual_decoder, memory, num_steps, stop_early)
    if model.cross_decoder is None:
        for _ in range(model.refine_iters):
            visual_logits = _refine(model, model.visual_decoder, visual_logits, memory, num_steps)
        return visual_logits, visual_logits
    cross_memory = _cross_memory(model, memory, visual_logits)
    cross_logits = _decode(model, model.cross_decoder, cross_memory, visual_logits.shape[1], False)
    for _ in range(model.refine_iters):
        visual_logits = _refine(model, model.visual_decoder, visual_logits, memory, num_steps)
        cross_memory = _cross_memory(model, memory, visual_logits)
        cross_logits = _refine(model, model.cross_decoder, cross_logits, cross_memory, num_steps)
    return visual_logits, cross_logits


def training_loss(system: CLIP4STRSystem, images: Tensor, labels: Sequence[str], perms: Tensor) -> Tensor:
    """:meth:`CLIP4STRSystem.training_loss`, computed as the original does."""
    model, tok = system.model, system.tokenizer
    tgt = tok.encode(labels, images.device)
    memory = model.encode(images)
    tgt_in = tgt[:, :-1]
    padding = (tgt_in == tok.pad_id) | (tgt_in == tok.eos_id)
    visual, cross = [], []
    for perm in perms.to(images.device):
        content_mask, query_mask = generate_attn_masks(perm)
        visual_logits = decoder_forward(model.visual_decoder, tgt_in, memory, None, query_mask, content_mask, padding)[
            0
        ]
        visual.append(visual_logits)
        if model.cross_decoder is not None:
            cross_memory = _cross_memory(model, memory, visual_logits)
            cross.append(
                decoder_forward(model.cross_decoder, tgt_in, cross_memory, None, query_mask, content_mask, padding)[0]
            )
    return permutation_loss(visual, cross, tgt[:, 1:], tok.pad_id, tok.eos_id, system.hparams.cross_loss_w)
