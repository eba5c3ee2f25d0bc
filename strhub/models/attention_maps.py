"""Where each decoding step of CLIP4STR looks: the cross-attention of both decoders over the image patches, for
``tools/visualize.py``.

The image is decoded by :meth:`CLIP4STR.forward_branches` itself, under a
:class:`~strhub.models.parseq.decoder.CrossAttentionRecorder`: greedy, autoregressive or not and with the
refinement passes as the model is configured, so the text is what ``tools/read.py --batch_size 1`` reads. Each
position shows the attention of the final pass that predicted it (the last refinement pass when there is one).

Weights are averaged over heads, in the last decoder layer: its query stream is what the output head classifies
(CLIP4STR's decoders, and the tiny models', have a single layer anyway).
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from strhub.models.clip4str.model import CLIP4STR
from strhub.models.parseq import Decoder
from strhub.models.parseq.decoder import CrossAttentionRecorder

__all__ = ['BranchAttention', 'AttentionMaps', 'attention_maps']


@dataclass
class BranchAttention:
    """One decoder's prediction and, per shown step (the characters, then ``[E]`` if predicted), its attention.

    Attributes:
        text: the predicted string (raw, over the training charset).
        tokens: (T,) what each step predicted: the characters, then ``'[E]'``.
        probs: (T,) the probability of each step's prediction (their product is the confidence).
        patches: (T, grid_h, grid_w) attention on the image patches.
        cls: (T,) attention on the class token (token 0 of the image tokens: not a patch).
        caption: (T, context_length) attention on the caption's text features (cross-modal decoder), else None.
            For each step ``patches.sum() + cls + caption.sum() == 1``.
    """

    text: str
    tokens: List[str]
    probs: np.ndarray
    patches: np.ndarray
    cls: np.ndarray
    caption: Optional[np.ndarray] = None

    @property
    def confidence(self) -> float:
        return float(np.prod(self.probs))


@dataclass
class AttentionMaps:
    """Both branches of one image.

    Attributes:
        grid: (grid_h, grid_w), the patch grid; it covers the whole network input.
        visual: the visual decoder (its memory: the image tokens).
        cross: the cross-modal decoder (its memory: image tokens, then the caption's); None for a visual-only model.
        caption_tokens: the caption the final cross-modal pass read, one label per CLIP text position:
            ``[SOT]``, BPE pieces, ``[EOT]``, then empty strings for the padding.
    """

    grid: Tuple[int, int]
    visual: BranchAttention
    cross: Optional[BranchAttention]
    caption_tokens: List[str]


def _final_pass(rec: CrossAttentionRecorder, decoder: Decoder, num_positions: int) -> Tensor:
    """The last layer's head-averaged weights (num_positions, S) of the pass that produced the final logits."""
    layer = decoder.layers[-1]
    # Calls in order: one per autoregressive step (or one non-autoregressive pass), then one per refinement pass;
    # the final logits come from the last num_positions query rows.
    rows = torch.cat([w[0] for lay, w in rec.weights if lay is layer], dim=1)
    return rows[:, -num_positions:].mean(0)


def _branch(model: CLIP4STR, logits: Tensor, weights: Tensor, grid: Tuple[int, int], cross: bool) -> BranchAttention:
    [text], [probs] = model.tokenizer.decode(logits.float().softmax(-1))
    steps = len(probs)  # the characters and [E]; all positions if no [E] was predicted
    weights = weights[:steps].cpu()
    num_patches = grid[0] * grid[1]
    if weights.shape[1] != 1 + num_patches + (model.bpe.context_length if cross else 0):
        raise ValueError(f'memory of {weights.shape[1]} tokens is not the class token and a {grid} patch grid')
    return BranchAttention(
        text=text,
        tokens=list(text) + [model.tokenizer.EOS] * (steps - len(text)),
        probs=probs.cpu().numpy(),
        patches=weights[:, 1 : 1 + num_patches].reshape(steps, *grid).numpy(),
        cls=weights[:, 0].numpy(),
        caption=weights[:, 1 + num_patches :].numpy() if cross else None,
    )


def _caption_labels(model: CLIP4STR, tokens: Tensor) -> List[str]:
    # The tokenizer the model already loaded (building another reads CLIP's BPE vocabulary: seconds).
    bpe = model.bpe._tok
    labels, ended = [], False
    for t in tokens.tolist():
        if t == bpe.sot_token_id:
            labels.append('[SOT]')
        elif t == bpe.eot_token_id:
            labels.append('[EOT]')
            ended = True
        else:  # after [EOT] the zero padding, which the decoder attends to as the original does
            labels.append('' if ended else bpe.decode([t]).strip())
    return labels


@torch.inference_mode()
def attention_maps(model: CLIP4STR, image: Tensor) -> AttentionMaps:
    """Decodes one image and returns what each step of each decoder attended to.

    Args:
        model: the network (``system.model``), in eval mode.
        image: (3, H, W) or (1, 3, H, W), preprocessed as for reading.

    Returns:
        The prediction and attention of both branches (see :class:`AttentionMaps`).
    """
    images = image.reshape(1, *image.shape[-3:]).to(model.device)
    grid = tuple(model.clip_model.visual.grid_size)
    with CrossAttentionRecorder() as rec:
        visual_logits, final_logits = model.forward_branches(images)
    visual = _branch(
        model, visual_logits, _final_pass(rec, model.visual_decoder, visual_logits.shape[1]), grid, cross=False
    )
    if model.cross_decoder is None:
        return AttentionMaps(grid, visual, None, [])
    cross = _branch(model, final_logits, _final_pass(rec, model.cross_decoder, final_logits.shape[1]), grid, True)
    # The final cross-modal pass reads the caption of the final visual prediction.
    return AttentionMaps(grid, visual, cross, _caption_labels(model, model.caption_tokens(visual_logits)[0]))
