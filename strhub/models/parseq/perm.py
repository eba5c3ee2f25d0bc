"""Permuted sequence modelling (PSM): the permutations of a batch and their attention masks, and the masks of
inference (left-to-right decoding, cloze refinement)."""

import math
from itertools import permutations
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

# For 4 characters with mirroring: one permutation of each mirror pair, in itertools order.
_MIRROR_SELECTOR_4 = [0, 3, 4, 6, 9, 10, 12, 16, 17, 18, 19, 21]


def gen_tgt_perms(
    max_num_chars: int,
    perm_num: int,
    perm_forward: bool,
    perm_mirrored: bool,
    rng: np.random.Generator,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Decoding orders shared by the whole batch, as sequence positions.

    Each row starts with 0 (``[B]``), lists the character positions 1..T in decoding order and ends
    with T + 1 (the ``[E]`` slot). Row 1 (the mirror of the canonical order) decodes ``[E]`` first,
    from ``[B]`` alone, which is what non-autoregressive decoding needs. For T < 5 the random orders
    are drawn with ``rng`` (numpy) from a fixed pool, for T >= 5 with ``torch.randperm``.

    Args:
        max_num_chars: T, the longest label of the batch.

    Returns:
        (P, T + 2) int64 tensor.
    """
    n = max_num_chars
    if n == 1:
        return torch.arange(3).unsqueeze(0)
    perms = [torch.arange(n)] if perm_forward else []
    max_perms = math.factorial(n) // (2 if perm_mirrored else 1)
    num_gen = min(perm_num // 2 if perm_mirrored else perm_num, max_perms)
    if n < 5:
        selector = _MIRROR_SELECTOR_4 if n == 4 and perm_mirrored else list(range(max_perms))
        pool = torch.as_tensor(list(permutations(range(n), n)))[selector]
        if perm_forward:
            pool = pool[1:]
        perms = torch.stack(perms) if perms else torch.empty(0, n, dtype=torch.long)
        if len(pool):
            i = rng.choice(len(pool), size=num_gen - len(perms), replace=False)
            perms = torch.cat([perms, pool[i]])
    else:
        perms.extend(torch.randperm(n, generator=generator) for _ in range(num_gen - len(perms)))
        perms = torch.stack(perms)
    if perm_mirrored:
        perms = torch.stack([perms, perms.flip(-1)]).transpose(0, 1).reshape(-1, n)
    bos = perms.new_zeros((len(perms), 1))
    eos = perms.new_full((len(perms), 1), n + 1)
    perms = torch.cat([bos, perms + 1, eos], dim=1)
    if len(perms) > 1:
        perms[1, 1:] = n + 1 - torch.arange(n + 1)
    return perms


def generate_attn_masks(perm: Tensor) -> Tuple[Tensor, Tensor]:
    """Masks for one permutation: a position may not see positions decoded after it.

    Args:
        perm: (T + 2,) positions in decoding order.

    Returns:
        content_mask (T + 1, T + 1) over input positions 0..T (self allowed), and
        query_mask (T + 1, T + 1): rows = output positions 1..T + 1, columns = input positions 0..T,
        with each query's own position masked too. Float, 0 / -inf.
    """
    size = perm.shape[0]
    order = torch.empty_like(perm)
    order[perm] = torch.arange(size, device=perm.device)
    mask = torch.zeros(size, size, device=perm.device)
    mask[order.unsqueeze(0) > order.unsqueeze(1)] = float('-inf')
    content_mask = mask[:-1, :-1].clone()
    mask.fill_diagonal_(float('-inf'))
    return content_mask, mask[1:, :-1]


def causal_mask(size: int, device: torch.device) -> Tensor:
    """(size, size) float mask, -inf above the diagonal."""
    return torch.triu(torch.full((size, size), float('-inf'), device=device), 1)


def cloze_mask(size: int, device: torch.device) -> Tensor:
    """Refinement mask: query k sees every context position except k + 1 (its own token)."""
    mask = torch.zeros(size, size, device=device)
    idx = torch.arange(size - 1, device=device)
    mask[idx, idx + 1] = float('-inf')
    return mask
