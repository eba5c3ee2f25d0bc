"""A second look: words read with low confidence are read again from other views of their image, and the most
confident reading of all is kept. An option of reading and evaluation (``TextReader(second_look=True)``,
``tools/read.py --second_look``, ``tools/test.py --second_look``), off by default: not in the paper or the original,
whose outputs the default reading reproduces.

Why these views: the network sees every crop squeezed to one fixed size (e.g. 32x128), so a word that fills a third of
a loose crop (a generous detector box, a sign with margins) gets a third of the image tokens. The visual decoder's
cross-attention shows which patch columns the word is in (:mod:`strhub.models.attention_maps`), so the first view is
the crop cut to those columns, at two margins. Two generic views go with it: the crop padded with its border colour
(words that touch the edge, curved or tilted ones) and the crop without its top and bottom tenth (clutter from
neighbouring lines). The development sets of ``tools/make_synthetic_dataset.py --scene_tests`` chose them and the
confidence threshold (README, "The tiny model on CPU").

Only the words below the threshold pay for it: their visual branch decoded again for its attention, then one forward
pass over their views.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from strhub.models.parseq.decoder import CrossAttentionRecorder

__all__ = [
    'SecondLookOptions',
    'check_second_look',
    'look_again',
    'read_with_second_look',
    'tensor_to_image',
    'text_columns',
    'views',
]


@dataclass(frozen=True)
class SecondLookOptions:
    """Attributes:
    below: words read with a confidence under this are read again; 0 never, above 1 always.
    attention: a patch column is part of the word when the word's attention on it is at least this share of the
        most attended column's.
    """

    below: float = 0.9
    attention: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.attention <= 1:
            raise ValueError(f'second look: attention must be within (0, 1], got {self.attention}')


def check_second_look(system) -> None:
    """Raises ValueError unless ``system`` is a CLIP4STR model (the second look reads its decoders' attention)."""
    if not hasattr(getattr(system, 'model', None), 'forward_branches'):
        raise ValueError(f"a second look needs a CLIP4STR model (its decoders' attention), not {type(system).__name__}")


def tensor_to_image(x: Tensor, mean: float = 0.5, std: float = 0.5) -> Image.Image:
    """A normalised (3, H, W) network input back to an RGB image."""
    a = ((x.detach().float().cpu() * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(a, 'RGB')


def text_columns(
    rec: CrossAttentionRecorder, system, visual_logits: Tensor, threshold: float
) -> List[Optional[Tuple[int, int]]]:
    """The patch columns ``[lo, hi)`` each image's word is in: those its characters attended to (the visual decoder's
    last layer, the pass that produced ``visual_logits``, heads averaged), at least ``threshold`` of the most
    attended one. None for an image read as empty."""
    model = system.model
    layer = model.visual_decoder.layers[-1]
    # One call per autoregressive step (or a single pass), then one per refinement pass: the final logits come from
    # the last rows.
    rows = torch.cat([w for lay, w in rec.weights if lay is layer], dim=2)[:, :, -visual_logits.shape[1] :].mean(1)
    grid_h, grid_w = model.clip_model.visual.grid_size
    patches = rows[:, :, 1 : 1 + grid_h * grid_w].reshape(*rows.shape[:2], grid_h, grid_w).sum(2)  # (N, T, grid_w)
    ends = visual_logits.argmax(-1) == system.tokenizer.eos_id
    lengths = torch.where(ends.any(-1), ends.int().argmax(-1), visual_logits.shape[1])  # characters before [E]
    out: List[Optional[Tuple[int, int]]] = []
    for profile, n in zip(patches, lengths.tolist()):
        if n == 0:
            out.append(None)
            continue
        profile = profile[:n].sum(0)
        cols = torch.nonzero(profile >= threshold * profile.max()).flatten()
        out.append((int(cols.min()), int(cols.max()) + 1))
    return out


def _border_colour(img: Image.Image) -> Tuple[int, ...]:
    a = np.asarray(img)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return tuple(int(v) for v in np.median(border, axis=0))


def views(img: Image.Image, columns: Optional[Tuple[int, int]], grid_w: int) -> List[Tuple[str, Image.Image]]:
    """The other views of an RGB crop, named: cut to the word's patch columns (margins of one and of half a patch;
    not when no word was read), padded with its border colour (0.3 of its height left and right, 0.15 above and
    below), its middle four fifths of rows."""
    w, h = img.size
    out = []
    if columns is not None:
        for name, margin in (('cut to the word', 1.0), ('cut closer', 0.5)):
            x0 = max(0, int((columns[0] - margin) * w / grid_w))
            x1 = min(w, int(np.ceil((columns[1] + margin) * w / grid_w)))
            out.append((name, img.crop((x0, 0, max(x1, x0 + 1), h))))
    pad = int(round(0.3 * h))
    out.append(('padded', ImageOps.expand(img, border=(pad, pad // 2), fill=_border_colour(img))))
    top, bottom = int(0.1 * h), int(np.ceil(0.9 * h))
    out.append(('rows trimmed', img.crop((0, top, w, max(bottom, top + 1)))))
    return out


def _columns(system, images: Tensor, threshold: float) -> List[Optional[Tuple[int, int]]]:
    """:func:`text_columns` of a batch: its visual branch decoded again, as ``forward_branches`` decodes it, while
    the one layer read is recorded (recording during the first read would slow every word, not just the unsure)."""
    model = system.model
    num_steps = model.max_label_length + 1
    with CrossAttentionRecorder([model.visual_decoder.layers[-1]]) as rec:
        memory = model.visual_decoder.memory_kv(model.encode(images))
        visual_logits = model.decode(model.visual_decoder, memory, num_steps, True)
        for _ in range(model.refine_iters):
            visual_logits = model.refine(model.visual_decoder, visual_logits, memory, num_steps)
    return text_columns(rec, system, visual_logits, threshold)


@torch.inference_mode()
def read_with_second_look(
    system, images: Sequence[Image.Image], transform, options: SecondLookOptions = SecondLookOptions()
) -> Tuple[List[str], List[Tensor]]:
    """Reads RGB images (full training charset), reading the unsure ones again.

    Args:
        system: a loaded CLIP4STR system in eval mode (its device is used).
        transform: PIL image -> network input, e.g. :func:`strhub.data.transforms.get_transform`.

    Returns:
        The most confident reading of each image, as ``tokenizer.decode`` gives them: the strings and the probability
        of each of their characters and of the ``[E]`` (whose product is the confidence).

    Raises:
        ValueError: ``system`` is not a CLIP4STR model.
    """
    check_second_look(system)
    device = system.device
    batch = torch.stack([transform(img) for img in images]).to(device)
    preds, probs = _decode(system, system(batch))
    unsure = [i for i, p in enumerate(probs) if p.prod().item() < options.below]
    if not unsure:
        return preds, probs
    columns = _columns(system, batch[unsure], options.attention)
    grid_w = system.model.clip_model.visual.grid_size[1]
    owners, extra = [], []
    for i, cols in zip(unsure, columns):
        for _, view in views(images[i], cols, grid_w):
            owners.append(i)
            extra.append(transform(view))
    for start in range(0, len(extra), len(images)):  # no larger batches than the caller's
        more_preds, more_probs = _decode(system, system(torch.stack(extra[start : start + len(images)]).to(device)))
        for i, pred, prob in zip(owners[start:], more_preds, more_probs):
            if prob.prod().item() > probs[i].prod().item():
                preds[i], probs[i] = pred, prob
    return preds, probs


def _decode(system, logits: Tensor) -> Tuple[List[str], List[Tensor]]:
    return system.tokenizer.decode(logits.float().softmax(-1))


@torch.inference_mode()
def look_again(
    system, image: Image.Image, transform, options: SecondLookOptions = SecondLookOptions()
) -> List[Tuple[str, Image.Image, str, float]]:
    """What a second look of one image chooses from, whatever its first reading's confidence (for
    ``tools/visualize.py``): (name, view, text, confidence) per view."""
    check_second_look(system)
    device = system.device
    [columns] = _columns(system, transform(image)[None].to(device), options.attention)
    named = views(image, columns, system.model.clip_model.visual.grid_size[1])
    texts, probs = _decode(system, system(torch.stack([transform(v) for _, v in named]).to(device)))
    return [(name, view, text, p.prod().item()) for (name, view), text, p in zip(named, texts, probs)]
