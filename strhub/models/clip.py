"""CLIP towers (open_clip modules, OpenAI key names) and loading of the CLIP weights users already have.

The original CLIP4STR rebuilds every CLIP, OpenAI's and OpenCLIP's alike, with OpenAI's choices:
QuickGELU in every MLP and ``heads = width // 64`` in both towers (20 vision heads for ViT-H/14,
not open_clip's 16). The released weights only reproduce that way, so :func:`build_clip` does the same.
"""

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from torch import Tensor

from strhub.models.serialization import (
    UnsafeFileError,
    WeightsMismatchError,
    error_summary,
    is_torchscript,
    load_state_dict_strict,
    load_weights_only,
    strip_module_prefix,
    torchscript_state_dict,
)

log = logging.getLogger(__name__)

# Entries of CLIP files that are not parameters (OpenAI's metadata; a causal mask some exports store).
_NON_PARAM_KEYS = ('input_resolution', 'context_length', 'vocab_size', 'attn_mask')
_TRUST_HINT = 'trust_checkpoint=true (train.py) or trust=True (load_clip)'


class CLIPWeightsError(ValueError):
    """A CLIP weight file that is missing, unreadable or of another architecture."""


@dataclass
class CLIPArch:
    """Shape of a ViT CLIP. Heads are ``width // head_width`` in both towers (OpenAI's rule)."""

    embed_dim: int
    image_size: Tuple[int, int]
    patch_size: Tuple[int, int]
    vision_width: int
    vision_layers: int
    text_width: int
    text_layers: int
    context_length: int = 77
    vocab_size: int = 49408
    head_width: int = 64

    def __post_init__(self):
        self.image_size = tuple(_pair(self.image_size))
        self.patch_size = tuple(_pair(self.patch_size))

    @property
    def grid(self) -> Tuple[int, int]:
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d['image_size'], d['patch_size'] = list(self.image_size), list(self.patch_size)
        return d


def _pair(v: Union[int, Sequence[int]]) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def arch_from_state_dict(state_dict: Dict[str, Tensor], image_size: Optional[Sequence[int]] = None) -> CLIPArch:
    """Infers a ViT CLIP's shape from its (OpenAI-named) state dict.

    Args:
        state_dict: CLIP weights with OpenAI key names (``visual.conv1.weight``, ...).
        image_size: (H, W) input size; only needed for non-square patch grids, otherwise the grid
            is taken as square (as OpenAI's ``build_model`` does).
    """
    if 'visual.proj' not in state_dict or 'visual.conv1.weight' not in state_dict:
        raise CLIPWeightsError('not a ViT CLIP state dict (no visual.proj / visual.conv1.weight)')
    conv = state_dict['visual.conv1.weight']
    patch = (conv.shape[2], conv.shape[3])
    n_patches = state_dict['visual.positional_embedding'].shape[0] - 1
    if image_size is None:
        side = math.isqrt(n_patches)
        if side * side != n_patches:
            raise CLIPWeightsError(f'{n_patches} patches is not a square grid: give image_size')
        image_size = (side * patch[0], side * patch[1])
    elif (image_size[0] // patch[0]) * (image_size[1] // patch[1]) != n_patches:
        raise CLIPWeightsError(
            f'image_size {list(image_size)} with patch {list(patch)} does not fit the {n_patches} patch position '
            'embeddings of the weights (clip_arch.image_size is the size the weights were trained at; the input '
            'size is model.img_size)'
        )

    def n_blocks(prefix: str) -> int:
        return len({k.split('.')[len(prefix.split('.'))] for k in state_dict if k.startswith(prefix + '.')})

    return CLIPArch(
        embed_dim=state_dict['text_projection'].shape[1],
        image_size=_pair(image_size),
        patch_size=patch,
        vision_width=conv.shape[0],
        vision_layers=n_blocks('visual.transformer.resblocks'),
        text_width=state_dict['ln_final.weight'].shape[0],
        text_layers=n_blocks('transformer.resblocks'),
        context_length=state_dict['positional_embedding'].shape[0],
        vocab_size=state_dict['token_embedding.weight'].shape[0],
    )


def clip_arch_of(model: CLIP) -> CLIPArch:
    """The architecture of a built CLIP."""
    arch = arch_from_state_dict(model.state_dict(), model.visual.image_size)
    arch.head_width = arch.vision_width // model.visual.transformer.resblocks[0].attn.num_heads
    return arch


def build_clip(arch: CLIPArch) -> CLIP:
    """An open_clip ``CLIP`` whose parameter names equal OpenAI's checkpoint keys."""
    if arch.vision_width % arch.head_width or arch.text_width % arch.head_width:
        raise ValueError(f'widths must be multiples of head_width={arch.head_width}: {arch}')
    if any(s % p for s, p in zip(arch.image_size, arch.patch_size)) or min(arch.grid) < 1:
        raise ValueError(f'image size {list(arch.image_size)} is not a whole number of patches {list(arch.patch_size)}')
    vision = CLIPVisionCfg(
        layers=arch.vision_layers,
        width=arch.vision_width,
        head_width=arch.head_width,
        patch_size=arch.patch_size,
        image_size=arch.image_size,
    )
    text = CLIPTextCfg(
        context_length=arch.context_length,
        vocab_size=arch.vocab_size,
        width=arch.text_width,
        heads=arch.text_width // arch.head_width,
        layers=arch.text_layers,
    )
    return CLIP(arch.embed_dim, vision, text, quick_gelu=True)


def sincos_pos_embed(grid: Tuple[int, int], width: int) -> Tensor:
    """2D sin-cos position codes, (grid_h * grid_w, width): half the channels encode the row, half the column."""

    def axis(n: int, dim: int) -> Tensor:
        freqs = 1.0 / 10000 ** (torch.arange(dim // 2) / (dim // 2))
        angles = torch.arange(n)[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    gh, gw = grid
    rows, cols = axis(gh, width // 2), axis(gw, width // 2)
    return torch.cat([rows[:, None].expand(gh, gw, -1), cols[None].expand(gh, gw, -1)], dim=-1).reshape(gh * gw, width)


def init_sincos_pos_embed(clip: CLIP) -> None:
    """Starts a randomly built image tower's learned position embedding at 2D sin-cos codes (zero for the class
    token) instead of OpenAI's random init (width^-0.5 noise, no notion of place), for training from scratch."""
    pos = clip.visual.positional_embedding
    if pos.shape[1] % 4:
        raise ValueError(f'sin-cos position codes need a vision width divisible by 4, got {pos.shape[1]}')
    with torch.no_grad():
        pos.zero_()
        pos[1:] = sincos_pos_embed(clip.visual.grid_size, pos.shape[1])


def resize_pos_embed(pos: Tensor, old_grid: Sequence[int], new_grid: Sequence[int]) -> Tensor:
    """A ViT position embedding (1 + H*W, width) for another patch grid: the patch rows interpolated bicubically as
    an image, the class token's row kept."""
    grid = pos[1:].float().T.reshape(1, pos.shape[1], *old_grid)
    grid = F.interpolate(grid, size=tuple(new_grid), mode='bicubic', align_corners=False)
    return torch.cat([pos[:1].float(), grid.reshape(pos.shape[1], -1).T]).to(pos.dtype)


def read_clip_state_dict(path: Union[str, Path], trust: bool = False) -> Dict[str, Tensor]:
    """Reads CLIP weights from a local file, never downloading, and never running code from it.

    Accepts OpenAI TorchScript archives (``ViT-B-16.pt``: their tensors are read without compiling the archive's
    code), plain or wrapped (``{'model': ...}``, ``{'state_dict': ...}``) state dicts (OpenAI-style ``.pt``,
    OpenCLIP ``.bin``) and ``.safetensors``. Values are returned as stored.

    Args:
        trust: the file is trusted: TorchScript archives go through ``torch.jit.load`` (which compiles and runs their
            code, as the original does) and pickles are loaded in full, whatever objects they hold.
    """
    path = Path(path)
    if not path.is_file():
        raise CLIPWeightsError(f'CLIP weights file not found: {path}')
    try:
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file

            sd = load_file(str(path))
        elif is_torchscript(path):
            sd = torch.jit.load(str(path), map_location='cpu').state_dict() if trust else torchscript_state_dict(path)
        elif trust:
            sd = torch.load(str(path), map_location='cpu', weights_only=False)
        else:
            sd = load_weights_only(path, _TRUST_HINT)
    except UnsafeFileError as e:
        raise CLIPWeightsError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - any reader failure is reported with the file name
        hint = f' (a TorchScript archive: if you trust it, load it with {_TRUST_HINT})' if is_torchscript(path) else ''
        raise CLIPWeightsError(f'cannot read CLIP weights from {path}: {error_summary(e)}{hint}') from None
    for wrapper in ('model', 'state_dict'):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CLIPWeightsError(f'{path} does not hold a CLIP state dict')
    return {k: v for k, v in strip_module_prefix(sd).items() if k not in _NON_PARAM_KEYS}


def load_clip(
    path: Union[str, Path],
    arch: Optional[CLIPArch] = None,
    trust: bool = False,
    image_size: Optional[Sequence[int]] = None,
) -> CLIP:
    """Builds a CLIP from a weights file; ``arch`` (if given) must match the file; ``trust``: see
    :func:`read_clip_state_dict`.

    As the original, weights pass through float16 before the model is cast to float32, so fp32
    OpenCLIP files are rounded exactly as the original rounds them.

    Args:
        image_size: (H, W) input size of the model, if other than the file's: its visual position embedding is
            resized to the new patch grid (:func:`resize_pos_embed`), e.g. 224x448 for long text from a 224x224
            CLIP. The original supports only the file's size.
    """
    sd = read_clip_state_dict(path, trust)
    try:
        found = arch_from_state_dict(sd, arch.image_size if arch is not None else None)
    except (CLIPWeightsError, KeyError) as e:
        raise CLIPWeightsError(f'{path}: {e}') from None
    if arch is not None:
        diff = [
            f'{k}: config {v} vs file {getattr(found, k)}'
            for k, v in dataclasses.asdict(arch).items()
            if k != 'head_width' and getattr(found, k) != v
        ]
        if diff:
            raise CLIPWeightsError(f'{path} is another CLIP architecture than configured: ' + '; '.join(diff))
        found.head_width = arch.head_width
    sd = {k: v.half().float() for k, v in sd.items()}
    if image_size is not None and tuple(_pair(image_size)) != found.image_size:
        old_grid = found.grid
        found.image_size = tuple(_pair(image_size))
        if any(s % p for s, p in zip(found.image_size, found.patch_size)) or min(found.grid) < 1:
            raise CLIPWeightsError(
                f'img_size {list(found.image_size)} is not a whole number of the CLIP patches '
                f'{list(found.patch_size)} of {path}'
            )
        key = 'visual.positional_embedding'
        sd[key] = resize_pos_embed(sd[key], old_grid, found.grid)
        log.info(
            f'{path}: {key} resized from a {old_grid[0]}x{old_grid[1]} to a {found.grid[0]}x{found.grid[1]} patch '
            f'grid (bicubic) for img_size {list(found.image_size)}'
        )
    model = build_clip(found)
    try:
        load_state_dict_strict(model, sd, str(path))
    except WeightsMismatchError as e:
        raise CLIPWeightsError(str(e)) from None
    return model


def encode_image(clip: CLIP, images: Tensor) -> Tensor:
    """All image tokens (class + patches) after ``ln_post``, projected: (N, 3, H, W) -> (N, 1 + G, E)."""
    v = clip.visual
    return v.ln_post(v.transformer(_image_tower_input(clip, images))) @ v.proj


def encode_image_keeping(clip: CLIP, images: Tensor, block_ids: Sequence[int]) -> Tuple[Tensor, List[Tensor]]:
    """:func:`encode_image`, and the inputs of the image tower's blocks ``block_ids`` (N, 1 + G, W each), for the
    STR-Adapter's ladder side networks."""
    v = clip.visual
    x = _image_tower_input(clip, images)
    kept = {}
    for i, block in enumerate(v.transformer.resblocks):
        if i in block_ids:
            kept[i] = x
        x = block(x)
    return v.ln_post(x) @ v.proj, [kept[i] for i in block_ids]


def _image_tower_input(clip: CLIP, images: Tensor) -> Tensor:
    """Patch embeddings with the class token and positions, after ``ln_pre``: (N, 1 + G, W)."""
    v = clip.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)  # (N, G, W)
    cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    return v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype))


def encode_text(clip: CLIP, tokens: Tensor) -> Tensor:
    """Features of every position (no pooling), projected: (N, L) ids -> (N, L, E).

    Uses the first L positions and the LxL corner of the causal mask, as the original does with L=16.
    """
    n = tokens.shape[1]
    x = clip.token_embedding(tokens) + clip.positional_embedding[:n]
    x = clip.transformer(x, attn_mask=clip.attn_mask[:n, :n])
    return clip.ln_final(x) @ clip.text_projection


class BpeTokenizer:
    """CLIP's BPE tokenizer: ``[SOT] bpe [EOT]`` zero-padded; too long -> cut and last token set to EOT."""

    CACHE_SIZE = 1 << 16  # strings kept

    def __init__(self, context_length: int) -> None:
        self.context_length = context_length
        self._tok = SimpleTokenizer()
        self._cache: Dict[str, Tensor] = {}  # captions repeat (words), and cleaning + BPE cost ~0.15 ms a string

    def __call__(self, texts: List[str]) -> Tensor:
        return torch.stack([self._encode(t) for t in texts]) if texts else self._tok([], self.context_length)

    def _encode(self, text: str) -> Tensor:
        row = self._cache.get(text)
        if row is None:
            row = self._tok([text], context_length=self.context_length)[0]
            if len(self._cache) < self.CACHE_SIZE:
                self._cache[text] = row
        return row
