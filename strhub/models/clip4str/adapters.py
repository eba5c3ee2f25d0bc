"""The STR-Adapter variant's adapters (paper's ablation; spec §9): a light module between a frozen CLIP image encoder
and the visual decoder. State-dict names equal the original's (``adapter.*``).

Every adapter is called as ``adapter(memory, block_inputs)``: ``memory`` the CLIP image tokens (N, 1 + G, E) and
``block_inputs`` the inputs of the image tower's blocks listed in ``adapter.block_ids`` (N, 1 + G, W each; empty for
the adapters that only see the output). The ladder adapters run a side network over those inputs, as the original
does through forward hooks on the frozen blocks.
"""

import copy
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from strhub.models.parseq.decoder import init_weights

ADAPTER_TYPES = ('linear', 'attention', 'ladder', 'linear_ladder', 'ladder_pruning')
# The ladder side networks that the original's optimiser treats as encoder (learning rate without coef_lr);
# the other adapters train with the decoder.
ENCODER_SIDE = ('ladder', 'ladder_pruning')
_LADDER_T = 0.1  # temperature of the gates sigmoid(alpha / T)


class LinearAdapter(nn.Module):
    """CLIP-Adapter's residual MLP: ``ratio * relu(W2 relu(W1 x)) + (1 - ratio) * x``, no biases."""

    block_ids: Tuple[int, ...] = ()

    def __init__(self, width: int, reduction: int = 2, ratio: float = 0.2) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(width, width // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(width // reduction, width, bias=False),
            nn.ReLU(),
        )
        self.ratio = ratio
        init_weights(self)

    def forward(self, memory: Tensor, block_inputs: Sequence[Tensor] = ()) -> Tensor:
        return self.ratio * self.fc(memory) + (1.0 - self.ratio) * memory


class AttentionAdapter(nn.Module):
    """One CLIP residual attention block over the image tokens, mixed half and half with its input."""

    block_ids: Tuple[int, ...] = ()

    def __init__(self, block: nn.Module, ratio: float = 0.5) -> None:
        super().__init__()
        self.attn = block
        self.ratio = ratio
        init_weights(self)  # the original's init (its in-projection: xavier, as PyTorch's own)

    def forward(self, memory: Tensor, block_inputs: Sequence[Tensor] = ()) -> Tensor:
        return self.ratio * self.attn(memory) + (1.0 - self.ratio) * memory


class LadderSideAdapter(nn.Module):
    """A side network beside the frozen image tower: block ``i`` of it takes a gated mix of the frozen tower's input
    to block ``block_ids[i]`` and its own previous output; ``ln_post`` and ``proj`` copied from CLIP; the result is
    mixed with the frozen tower's output by the first gate. Gates ``sigmoid(alpha / 0.1)`` start at 0.5.

    Args:
        blocks: the side blocks, one per entry of ``block_ids`` (copies of CLIP's, pruned copies, or small MLPs).
    """

    def __init__(self, visual: nn.Module, block_ids: Sequence[int], blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.block_ids = tuple(block_ids)
        self.alpha = nn.Parameter(torch.zeros(len(block_ids)))
        self.resblocks = nn.ModuleList(blocks)
        self.ln_post = copy.deepcopy(visual.ln_post)
        self.proj = nn.Parameter(visual.proj.detach().clone())

    def forward(self, memory: Tensor, block_inputs: Sequence[Tensor] = ()) -> Tensor:
        gates = torch.sigmoid(self.alpha / _LADDER_T)
        x = self.resblocks[0](block_inputs[0])
        for i in range(1, len(self.resblocks)):
            x = self.resblocks[i](gates[i] * block_inputs[i] + (1.0 - gates[i]) * x)
        x = self.ln_post(x) @ self.proj
        return gates[0] * memory + (1.0 - gates[0]) * x


class PrunedAttention(nn.Module):
    """Multi-head self-attention whose queries, keys and values are ``width / reduction`` wide (the head count kept,
    so each head is narrower), projected back to ``width``."""

    def __init__(self, width: int, heads: int, reduction: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width // reduction, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width // reduction))
        self.out_proj = nn.Linear(width // reduction, width)

    def forward(self, x: Tensor) -> Tensor:
        n, length, _ = x.shape
        q, k, v = (
            t.reshape(n, length, self.num_heads, -1).transpose(1, 2)
            for t in F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, -1))


class PrunedBlock(nn.Module):
    """A CLIP residual block with its attention and MLP pruned to ``1 / reduction`` of their inner width."""

    def __init__(self, width: int, heads: int, reduction: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = PrunedAttention(width, heads, reduction)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module('c_fc', nn.Linear(width, width * mlp_ratio // reduction))
        self.mlp.add_module('gelu', _QuickGELU())
        self.mlp.add_module('c_proj', nn.Linear(width * mlp_ratio // reduction, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def _top_l1(weight: Tensor, keep: int) -> Tensor:
    """Indices (ascending) of the ``keep`` rows of largest L1 norm (for a vector: of largest magnitude)."""
    norms = weight.abs() if weight.ndim == 1 else weight.abs().sum(dim=1)
    return torch.topk(norms, keep, sorted=False).indices.sort().values


def prune_block(block: nn.Module, reduction: int) -> PrunedBlock:
    """A :class:`PrunedBlock` from a CLIP block's weights, as the original's pruning: for each of q, k and v the
    rows of largest L1 norm, ``out_proj`` and ``c_proj`` the columns of largest L1 norm, ``c_fc`` the rows of largest
    L1 norm. Biases of pruned outputs are pruned by their own magnitude, not with their rows: the original's choice
    (it pairs a row with another row's bias), kept so that its checkpoints and training start reproduce."""
    width = block.ln_1.weight.shape[0]
    heads = block.attn.num_heads
    mlp_width = block.mlp.c_fc.weight.shape[0]
    pruned = PrunedBlock(width, heads, reduction, mlp_width // width)
    sd = {k: v.detach() for k, v in block.state_dict().items()}
    qkv_w = [w[_top_l1(w, width // reduction)] for w in sd['attn.in_proj_weight'].chunk(3)]
    qkv_b = [b[_top_l1(b, width // reduction)] for b in sd['attn.in_proj_bias'].chunk(3)]
    out_w = sd['attn.out_proj.weight']
    fc_w, fc_b, proj_w = sd['mlp.c_fc.weight'], sd['mlp.c_fc.bias'], sd['mlp.c_proj.weight']
    new = {
        'ln_1.weight': sd['ln_1.weight'],
        'ln_1.bias': sd['ln_1.bias'],
        'ln_2.weight': sd['ln_2.weight'],
        'ln_2.bias': sd['ln_2.bias'],
        'attn.in_proj_weight': torch.cat(qkv_w),
        'attn.in_proj_bias': torch.cat(qkv_b),
        'attn.out_proj.weight': out_w[:, _top_l1(out_w.T, width // reduction)],
        'attn.out_proj.bias': sd['attn.out_proj.bias'],
        'mlp.c_fc.weight': fc_w[_top_l1(fc_w, mlp_width // reduction)],
        'mlp.c_fc.bias': fc_b[_top_l1(fc_b, mlp_width // reduction)],
        'mlp.c_proj.weight': proj_w[:, _top_l1(proj_w.T, mlp_width // reduction)],
        'mlp.c_proj.bias': sd['mlp.c_proj.bias'],
    }
    pruned.load_state_dict(new)
    return pruned


def build_adapter(
    adapter_type: str, clip: nn.Module, dec_num_heads: int, block_ids: Sequence[int], prune_reduction: int
) -> nn.Module:
    """The adapter ``adapter_type`` (one of ``ADAPTER_TYPES``) for a CLIP model, initialised as the original.

    Args:
        dec_num_heads: heads of the attention adapter (the original uses the decoder's).
        block_ids: image-tower blocks the ladder adapters take their inputs from.
        prune_reduction: width reduction of the pruned ladder's blocks.
    """
    visual = clip.visual
    embed_dim = visual.proj.shape[1]
    blocks: List[nn.Module] = list(visual.transformer.resblocks)
    if adapter_type in ('ladder', 'linear_ladder', 'ladder_pruning'):
        bad = [i for i in block_ids if not 0 <= i < len(blocks)]
        if not block_ids or bad:
            raise ValueError(f'block_ids {list(block_ids)} must name blocks 0..{len(blocks) - 1} of the image tower')
    if adapter_type == 'linear':
        return LinearAdapter(embed_dim, reduction=2, ratio=0.2)
    if adapter_type == 'attention':
        if embed_dim % dec_num_heads:
            raise ValueError(f'the attention adapter needs embed_dim {embed_dim} divisible by {dec_num_heads} heads')
        block = type(blocks[0])(embed_dim, dec_num_heads, act_layer=type(blocks[0].mlp.gelu))
        return AttentionAdapter(block, ratio=0.5)
    if adapter_type == 'ladder':
        return LadderSideAdapter(visual, block_ids, [copy.deepcopy(blocks[i]) for i in block_ids])
    if adapter_type == 'linear_ladder':
        width = visual.class_embedding.shape[0]
        side = [LinearAdapter(width, reduction=4, ratio=0.5) for _ in block_ids]
        return LadderSideAdapter(visual, block_ids, side)
    if adapter_type == 'ladder_pruning':
        if prune_reduction < 1 or any(b.attn.head_dim % prune_reduction for b in blocks[:1]):
            raise ValueError(f'prune_reduction {prune_reduction} must divide the head width {blocks[0].attn.head_dim}')
        return LadderSideAdapter(visual, block_ids, [prune_block(blocks[i], prune_reduction) for i in block_ids])
    raise ValueError(f'adapter_type must be null or one of {", ".join(ADAPTER_TYPES)}, got {adapter_type!r}')
