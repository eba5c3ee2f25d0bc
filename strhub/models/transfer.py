"""Loading a checkpoint's weights into a model of another shape, for fine-tuning (``train.py pretrained=CKPT``).

Three changes are mapped; everything else must match exactly (one :class:`WeightsMismatchError` otherwise):

- **charset** (``model.charset_train``): the rows of both output heads and both token embeddings are copied per
  character the two charsets share, matched by character, not by index (reordering is safe); ``[E]``, ``[B]`` and
  ``[P]`` go to their new ids; new characters keep the fresh model's initialisation;
- **max_label_length**: the position queries of the positions both have are copied; the extra ones keep the fresh
  model's initialisation (a truncated normal, std 0.02, as every position starts), since no learned position says
  more about an unseen one than the fresh prior does;
- **img_size or patch grid**: CLIP's visual position embedding is resized by bicubic interpolation of its patch
  grid, the class token's row kept, so that e.g. 224x448 inputs work from a 224x224 checkpoint.

Loading the same shape is exact: every tensor is copied unchanged.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor, nn

from strhub.data.utils import Tokenizer
from strhub.models.clip import resize_pos_embed
from strhub.models.serialization import WeightsMismatchError, load_state_dict_strict

__all__ = ['transfer_weights']

_HEAD = ('head.weight', 'head.bias')
_EMBED = 'text_embed.embedding.weight'
_POS_QUERIES = 'pos_queries'
_VISUAL_POS = 'clip_model.visual.positional_embedding'


def _rows(fresh: Tensor, old: Tensor, pairs: Sequence[Tuple[int, int]]) -> Tensor:
    out = fresh.clone()
    if pairs:
        dst, src = map(list, zip(*pairs))
        out[dst] = old[src].to(out.dtype)
    return out


def _source(hparams: Mapping[str, Any], key: str, source: str, name: str, old: Tensor, new: Tensor) -> Any:
    value = hparams.get(key)
    if value is None:
        raise WeightsMismatchError(
            f'{source} does not fit the model: {name}: checkpoint {tuple(old.shape)}, model {tuple(new.shape)}, '
            f'and the checkpoint records no {key} to map it by'
        )
    return value


def _grid(num_tokens: int, img_size: Sequence[int], patch: Sequence[int], source: str, key: str) -> Tuple[int, int]:
    grid = (int(img_size[0]) // patch[0], int(img_size[1]) // patch[1])
    if grid[0] * grid[1] + 1 != num_tokens:
        raise WeightsMismatchError(
            f'{source} does not fit the model: {key}: {num_tokens} position embeddings do not fit a '
            f'{grid[0]}x{grid[1]} patch grid (img_size {list(img_size)}, patch {list(patch)})'
        )
    return grid


def transfer_weights(
    model: nn.Module, state_dict: Dict[str, Tensor], hparams: Optional[Mapping[str, Any]], source: str
) -> List[str]:
    """Loads ``state_dict`` (a checkpoint's weights, our key names) into ``model``, mapping the charset, the
    position queries and the visual position embedding where their shapes differ.

    Args:
        model: the system to fine-tune (its ``hparams`` give the new charset and image size).
        hparams: the checkpoint's hyper-parameters (``charset_train``, ``img_size``): needed only for a change.

    Returns:
        The report, one line per mapped change (empty when every shape matched).

    Raises:
        WeightsMismatchError: a tensor that cannot be mapped, naming it and both shapes.
    """
    hparams = hparams or {}
    own = model.state_dict()
    weights = dict(state_dict)
    report: List[str] = []
    new_tok = Tokenizer(model.hparams.charset_train)
    for key, new in own.items():
        old = weights.get(key)
        if old is None or old.shape == new.shape:
            continue
        if (key.endswith(_HEAD) or key.endswith(_EMBED)) and old.shape[1:] == new.shape[1:]:  # not a width change
            old_ids = {
                t: i for i, t in enumerate(Tokenizer(_source(hparams, 'charset_train', source, key, old, new)).tokens)
            }
            # The head predicts [E] and the characters; the embedding also has [B] and [P].
            pairs = [(i, old_ids[t]) for i, t in enumerate(new_tok.tokens[: new.shape[0]]) if t in old_ids]
            pairs = [(i, j) for i, j in pairs if j < old.shape[0]]
            weights[key] = _rows(new, old, pairs)
            if key.endswith(_HEAD[0]) or key.endswith(_EMBED):
                kept = len(pairs) - (3 if key.endswith(_EMBED) else 1)
                dropped = len(old_ids) - 3 - kept
                report.append(
                    f'{key}: {kept} characters copied, {len(new_tok.charset) - kept} added, {dropped} dropped'
                )
        elif key.endswith(_POS_QUERIES) and old.shape[::2] == new.shape[::2]:
            keep = min(old.shape[1], new.shape[1])
            weights[key] = new.clone()
            weights[key][:, :keep] = old[:, :keep].to(new.dtype)
            added = new.shape[1] - keep
            report.append(
                f'{key}: {keep} positions copied, {added} added'
                + (f', {old.shape[1] - keep} dropped' if old.shape[1] > keep else '')
            )
        elif key.endswith(_VISUAL_POS) and old.shape[1:] == new.shape[1:]:
            patch = tuple(own[key.replace('positional_embedding', 'conv1.weight')].shape[2:])
            old_img = _source(hparams, 'img_size', source, key, old, new)
            old_grid = _grid(old.shape[0], old_img, patch, source, key)
            new_grid = _grid(new.shape[0], model.hparams.img_size, patch, source, key)
            weights[key] = resize_pos_embed(old, old_grid, new_grid).to(new.dtype)
            report.append(
                f'{key}: patch grid {old_grid[0]}x{old_grid[1]} resized to {new_grid[0]}x{new_grid[1]} (bicubic)'
            )
    load_state_dict_strict(model, weights, source)
    return report
