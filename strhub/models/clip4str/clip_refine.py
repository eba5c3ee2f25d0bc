"""CLIP post-refinement of predictions: the original's optional ``test.py --clip_refine`` (spec §8.5), off by default
and not used for the paper's results.

Per image: candidate readings are drawn from the per-position distributions of the prediction, the greedy reading is
added when no draw is as probable, and each candidate is scored by the model's own CLIP (image-text similarity); the
reading with the highest ``softmax(joint probabilities) + alpha * softmax(CLIP logits)`` wins.

Deliberate difference: CLIP reads the candidates with its causal mask over all 77 positions. The original cuts the
text blocks' masks of a CLIP4STR model to the 16 caption positions, so its ``--clip_refine`` raises on CLIP4STR
checkpoints (a 16x16 mask for 77 tokens); it only runs with an uncut CLIP (STR-Adapter's, or for a PARSeq model one
loaded from ``--clip_model_path``). Its draws come from torch's global generator, unseeded; here from a seeded one.
"""

import functools
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from strhub.models.clip import BpeTokenizer, encode_image, encode_text

# The original tokenises candidates with CLIP's full context, not the 16 positions of the cross-modal captions.
CONTEXT_LENGTH = 77


class ClipRefineError(ValueError):
    """Invalid refinement options, or a candidate text too long for CLIP's context."""


@dataclass(frozen=True)
class ClipRefineOptions:
    """How candidates are drawn and weighed (defaults: the original ``test.py``'s).

    Args:
        k: candidates kept: the ``k`` draws of highest joint probability (``--sample_K``).
        k2: each position is drawn among its ``k2`` most probable classes; ``<= 0`` or at least the number of classes:
            among all (``--sample_K2``).
        num_samples: draws per image (``--sample_total``).
        prompt: text CLIP reads before each candidate, joined with a space (``--sample_prompt``), e.g. ``a photo of``.
        alpha: weight of CLIP's probabilities (``--alpha``).
        seed: seed of the draws.
    """

    k: int = 5
    k2: int = 5
    num_samples: int = 50
    prompt: Optional[str] = None
    alpha: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ClipRefineError(f'k must be >= 1, got {self.k}')
        if self.num_samples < 1:
            raise ClipRefineError(f'num_samples must be >= 1, got {self.num_samples}')
        if not math.isfinite(self.alpha):
            raise ClipRefineError(f'alpha must be a finite number, got {self.alpha}')


def truncated_distribution(probs: Tensor, eos_id: int) -> Tensor:
    """The positions before the first greedy ``[E]`` of (T, C) probabilities, with ``[E]``'s probability set to 0
    (not renormalised, as the original): (L, C), L <= T."""
    ids = probs.argmax(-1).tolist()
    length = ids.index(eos_id) if eos_id in ids else len(ids)
    out = probs[:length].clone()
    out[:, eos_id] = 0
    return out


def sample_candidates(
    probs: Tensor, k: int, k2: int, num_samples: int, generator: Optional[torch.Generator] = None
) -> Tuple[Tensor, Tensor]:
    """Draws ``num_samples`` readings from independent per-position distributions and keeps the ``k`` most probable.

    Args:
        probs: (L, C) per-position probabilities (:func:`truncated_distribution`), on the generator's device.
        k2: draw among each position's ``k2`` most probable classes (all if ``k2 <= 0`` or ``k2 >= C``).

    Returns:
        Class ids (n, L) and their probabilities (n, L) of n <= k candidates, highest joint probability first.
    """
    pool, pool_ids = probs.topk(k2, dim=-1) if 0 < k2 < probs.shape[-1] else (probs, None)
    draws = torch.multinomial(pool, num_samples, replacement=True, generator=generator)  # (L, S)
    drawn = pool.gather(1, draws).T  # (S, L)
    ids = (pool_ids.gather(1, draws) if pool_ids is not None else draws).T
    joint = drawn.prod(1)
    # As the original, a draw is new when its joint probability is: two readings of equal probability count once.
    seen, keep = set(), []
    for i, p in enumerate(joint.tolist()):
        if p not in seen:
            seen.add(p)
            keep.append(i)
    keep = torch.tensor(keep)
    order = joint[keep].topk(min(k, len(keep))).indices
    return ids[keep][order], drawn[keep][order]


@functools.lru_cache(maxsize=None)
def _bpe() -> BpeTokenizer:
    # One position more than CLIP's: a text that fills it is too long (the tokenizer would cut it silently).
    return BpeTokenizer(CONTEXT_LENGTH + 1)


def _clip_tokens(texts: List[str]) -> Tensor:
    """(M, 77) CLIP token ids; a text that does not fit is an error, as in the original (never cut)."""
    tokens = _bpe()(texts)
    too_long = (tokens[:, -1] != 0).nonzero()
    if len(too_long):
        text = texts[too_long[0, 0]]
        shown = repr(text) if len(text) <= 60 else repr(text[:30]) + ' ... ' + repr(text[-20:])
        raise ClipRefineError(f'{shown} is longer than the {CONTEXT_LENGTH} tokens CLIP reads: shorten the prompt')
    return tokens[:, :CONTEXT_LENGTH]


@torch.no_grad()
def clip_refine(
    model, images: Tensor, logits: Tensor, options: ClipRefineOptions, generator: torch.Generator
) -> Tuple[List[str], List[float]]:
    """Refines a batch of predictions with CLIP.

    Args:
        model: a CLIP4STR system: its tokenizer, test-charset adapter and CLIP are used.
        images: (N, 3, H, W) the images as given to the model (the original scores them as they are, without CLIP's
            own preprocessing).
        logits: (N, T, C) the model's output for them.
        generator: CPU generator of the draws, consumed image after image.

    Returns:
        Per image, the chosen reading adapted to the test charset (candidates are adapted before CLIP reads them) and
        its confidence: the product of its characters' probabilities. As in the original, this product leaves out
        the ``[E]`` probability that plain evaluation's confidence includes.
    """
    tokenizer, adapter = model.tokenizer, model.charset_adapter
    probs = logits.detach().float().softmax(-1).cpu()
    candidates = []  # per image: (readings, per-position probabilities (n, L))
    for dist in probs:
        dist = truncated_distribution(dist, tokenizer.eos_id)
        greedy_probs, greedy_ids = dist.max(-1)
        ids, drawn = sample_candidates(dist, options.k, options.k2, options.num_samples, generator)
        if drawn.prod(1).max() < greedy_probs.prod():
            ids, drawn = torch.cat([ids, greedy_ids[None]]), torch.cat([drawn, greedy_probs[None]])
        candidates.append(([adapter(tokenizer.ids_to_str(row)) for row in ids.tolist()], drawn))

    # CLIP reads the candidates of every image with more than one (for one, the sum below picks it anyway).
    scored = [i for i, (readings, _) in enumerate(candidates) if len(readings) > 1]
    clip_logits = {}
    if scored:
        clip = model.model.clip_model
        prefix = '' if options.prompt is None else options.prompt + ' '
        texts = [prefix + r for i in scored for r in candidates[i][0]]
        tokens = _clip_tokens(texts).to(images.device)
        # The image's class token and each text's [EOT] token, projected (the original's CLIP.forward).
        image_features = F.normalize(encode_image(clip, images[scored])[:, 0].float(), dim=-1)
        text_features = encode_text(clip, tokens)[torch.arange(len(texts)), tokens.argmax(-1)]
        text_features = F.normalize(text_features.float(), dim=-1)
        start = 0
        for row, i in enumerate(scored):
            n = len(candidates[i][0])
            sims = text_features[start : start + n] @ image_features[row]
            clip_logits[i] = (clip.logit_scale.exp().float() * sims).cpu()
            start += n

    preds, confidences = [], []
    for i, (readings, drawn) in enumerate(candidates):
        joint = drawn.prod(1)
        # As the original: a softmax of the probabilities themselves, not of their logarithms, so this term differs
        # by less than a factor e between candidates, and not at all in float32 between improbable ones; ties go to
        # the first candidate (the most probable draw, the greedy reading coming last).
        score = joint.softmax(0)
        if i in clip_logits:
            score = score + options.alpha * clip_logits[i].softmax(0)
        best = int(score.argmax())
        preds.append(readings[best])
        confidences.append(joint[best].item())
    return preds, confidences
