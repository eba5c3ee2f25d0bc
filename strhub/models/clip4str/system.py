"""CLIP4STR as a LightningModule: construction from config, freezing, the PSM loss, optimiser and schedule."""

import dataclasses
import math
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import AdamW
from torch.optim.lr_scheduler import OneCycleLR

from strhub.models.base import BaseSystem
from strhub.models.clip import CLIPArch, build_clip, clip_arch_of, init_sincos_pos_embed, load_clip
from strhub.models.clip4str.adapters import ENCODER_SIDE, build_adapter
from strhub.models.clip4str.model import CLIP4STR, concat_kv
from strhub.models.parseq import gen_tgt_perms, generate_attn_masks

SYSTEM_NAME = 'clip4str'  # recorded in checkpoints, the key of strhub.models.systems.SYSTEMS

# The original freezes whole towers only from 12 layers on, whatever the tower's depth (so "6" freezes
# 6 of the 24 text blocks of ViT-H/14); kept for equivalence.
_FULL_FREEZE_LAYERS = 12
_NO_DECAY_NAMES = ('bn', 'ln', 'bias', 'logit_scale', 'pos_queries', 'text_embed')


class CLIP4STRSystem(BaseSystem):
    """Trains and evaluates :class:`CLIP4STR`.

    The CLIP comes from ``clip_pretrained`` (a local weights file) or, with ``clip_pretrained=None``,
    is built randomly from ``clip_arch`` (tiny models, and the skeleton a checkpoint is loaded into).
    When both are given the file must have the configured shape. ``clip_trusted``: the CLIP file may be loaded in
    full, running any code it holds (see :func:`strhub.models.clip.read_clip_state_dict`).

    The STR-Adapter variant (``configs/experiment/clip4str-adapter.yaml``) is this system with ``adapter_type`` set
    (``block_ids`` and ``prune_reduction`` for the ladder adapters, :func:`build_adapter`), the CLIP frozen
    (``image_freeze_nlayer`` and ``text_freeze_nlayer`` 12) and no language model. Learning rate: ``lr`` is for a
    global batch of ``lr_ref_batch`` and scales linearly with it; ``lr_sqrt_devices`` counts the devices by their
    square root, the adapter's rule in the original (CLIP4STR's: 512, linear).
    """

    def __init__(
        self,
        charset_train: str,
        charset_test: str,
        max_label_length: int,
        batch_size: int,
        lr: float,
        warmup_pct: float,
        weight_decay: float,
        img_size: Sequence[int],
        clip_pretrained: Optional[str],
        clip_arch: Optional[Dict[str, Any]],
        context_length: int,
        dec_num_heads: int,
        dec_mlp_ratio: int,
        dec_depth: int,
        dropout: float,
        perm_num: int,
        perm_forward: bool,
        perm_mirrored: bool,
        decode_ar: bool,
        refine_iters: int,
        use_language_model: bool,
        image_detach: bool,
        cross_loss_w: float,
        image_freeze_nlayer: int,
        text_freeze_nlayer: int,
        coef_lr: float,
        coef_wd: float,
        seed: int = 0,
        pos_embed_init: Optional[str] = None,
        clip_trusted: bool = False,
        adapter_type: Optional[str] = None,
        block_ids: Sequence[int] = (0, 4, 8, 11),
        prune_reduction: int = 4,
        lr_ref_batch: int = 512,
        lr_sqrt_devices: bool = False,
    ) -> None:
        super().__init__()
        if pos_embed_init not in (None, 'sincos'):
            raise ValueError(f"pos_embed_init must be null or 'sincos', got {pos_embed_init!r}")
        if pos_embed_init and clip_pretrained:
            raise ValueError('pos_embed_init=sincos is for a random CLIP; it would overwrite pre-trained weights')
        arch = CLIPArch(**clip_arch) if clip_arch is not None else None
        # The CLIP is built for img_size; clip_arch.image_size is that of the weights it describes. A pre-trained
        # file of another size has its position embedding resized (the original requires the file's size).
        if clip_pretrained:
            clip = load_clip(clip_pretrained, arch, trust=clip_trusted, image_size=img_size)
        elif arch is not None:
            clip = build_clip(dataclasses.replace(arch, image_size=tuple(img_size)))
        else:
            raise ValueError('set model.clip_pretrained (a CLIP weights file) or model.clip_arch (random init)')
        if pos_embed_init == 'sincos':
            init_sincos_pos_embed(clip)
        if perm_mirrored and perm_num % 2:
            raise ValueError(f'perm_num must be even with perm_mirrored (got {perm_num})')
        # Record the resolved architecture so the checkpoint rebuilds without the CLIP file.
        clip_arch = clip_arch_of(clip).to_dict()
        block_ids = list(block_ids)
        self.save_hyperparameters()
        # Built from the CLIP before it is frozen: the ladder adapters start as copies of its blocks.
        adapter = build_adapter(adapter_type, clip, dec_num_heads, block_ids, prune_reduction) if adapter_type else None
        self.model = CLIP4STR(
            clip,
            charset_train,
            charset_test,
            max_label_length,
            context_length,
            dec_num_heads,
            dec_mlp_ratio,
            dec_depth,
            dropout,
            decode_ar,
            refine_iters,
            use_language_model,
            image_detach,
            adapter,
        )
        self.frozen_modules = self._freeze(image_freeze_nlayer, text_freeze_nlayer)

    # -- inference -------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def charset_adapter(self):
        return self.model.charset_adapter

    @property
    def charset_test(self) -> str:
        return self.hparams.charset_test

    @charset_test.setter
    def charset_test(self, charset: str) -> None:
        """Scores (and captions, in the cross-modal branch) on another charset, as ``charset_test=`` at loading."""
        self.model.charset_test = charset
        self.hparams.charset_test = charset

    def forward(self, images: Tensor, max_length: Optional[int] = None) -> Tensor:
        return self.model(images, max_length)

    # -- freezing --------------------------------------------------------------------------------------
    def _freeze(self, image_nlayer: int, text_nlayer: int) -> list:
        """Freezes lower CLIP blocks (the original's rules); returns the modules to keep in eval mode."""
        clip = self.model.clip_model
        frozen_modules = []
        if image_nlayer > -1:
            for name, p in clip.visual.named_parameters():
                kept = name.startswith(('ln_post', 'proj', 'conv1', 'ln_pre'))
                block = _block_index(name)
                if image_nlayer >= _FULL_FREEZE_LAYERS or not (kept or (block is not None and block >= image_nlayer)):
                    p.requires_grad_(False)
            frozen_modules += list(clip.visual.transformer.resblocks)[: max(image_nlayer, 0)]
        if text_nlayer > -1:
            full = text_nlayer >= _FULL_FREEZE_LAYERS
            for name, p in clip.named_parameters():
                if name.startswith('visual'):
                    continue
                block = _block_index(name)
                in_head = name.startswith(('ln_final.', 'text_projection'))
                trainable = in_head or (block is not None and block >= text_nlayer)
                if full or not trainable:
                    p.requires_grad_(False)
            frozen_modules += list(clip.transformer.resblocks)[:text_nlayer]
            if full:
                frozen_modules.append(clip.ln_final)
        return frozen_modules

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for m in self.frozen_modules:
                m.eval()
        return self

    # -- training --------------------------------------------------------------------------------------
    def training_loss(self, images: Tensor, labels: Sequence[str], perms: Tensor) -> Tensor:
        """PSM loss of both branches for explicit permutations.

        Computes what the original computes (:func:`strhub.models.clip4str.reference.training_loss`) without
        repeating work: each decoder's memory keys/values once for all permutations (the cross-modal decoder's
        image part once, the text part once per distinct caption), and the text encoder once per distinct caption
        of the step, where the original runs it once per permutation.

        Args:
            images: (N, 3, H, W).
            labels: N strings.
            perms: (P, T + 2) decoding orders (see :func:`gen_tgt_perms`).

        Returns:
            Sum of the visual and ``cross_loss_w`` x cross-modal token-weighted mean cross-entropies.
        """
        model, tok = self.model, self.tokenizer
        tgt = tok.encode(labels, images.device)
        memory = model.encode(images)
        tgt_in = tgt[:, :-1]
        padding = (tgt_in == tok.pad_id) | (tgt_in == tok.eos_id)
        masks = [generate_attn_masks(perm) for perm in perms.to(images.device)]
        visual_kv = model.visual_decoder.memory_kv(memory)
        visual = [model.visual_decoder(tgt_in, visual_kv, None, qm, cm, padding)[0] for cm, qm in masks]
        cross = []
        if model.cross_decoder is not None:
            # Teacher forcing with the ground truth; each permutation's memory from its own visual prediction.
            n = len(labels)
            tokens = model.caption_tokens(torch.cat(visual))  # (P * N, context_length)
            captions, index = torch.unique(tokens, dim=0, return_inverse=True)
            text_kv = model.cross_decoder.memory_kv(model.encode_caption(captions).to(memory.dtype))
            image_kv = model.cross_decoder.memory_kv(model.cross_image(memory))
            for i, (cm, qm) in enumerate(masks):
                rows = index[i * n : (i + 1) * n]
                kv = concat_kv(image_kv, [(k[rows], v[rows]) for k, v in text_kv])
                cross.append(model.cross_decoder(tgt_in, kv, None, qm, cm, padding)[0])
        return permutation_loss(visual, cross, tgt[:, 1:], tok.pad_id, tok.eos_id, self.hparams.cross_loss_w)

    def permutation_rngs(self, micro_batch: int) -> Tuple[np.random.Generator, torch.Generator]:
        """The generators of a training batch's permutations: a function of (seed, rank, optimizer step, micro-batch
        within the step), so that every DDP rank draws its own, as the original's unseeded per-process generators
        did, and a resumed run (checkpoints are saved at step ends) draws what the uninterrupted one would, with no
        state to save."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        seq = np.random.SeedSequence([self.hparams.seed, rank, self.global_step, micro_batch])
        np_seed, torch_seed = seq.spawn(2)
        return np.random.default_rng(np_seed), torch.Generator().manual_seed(int(torch_seed.generate_state(1)[0]))

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, labels = batch
        max_len = max(len(y) for y in labels)
        hp = self.hparams
        # The micro-batch within the optimizer step: Lightning steps after every accumulate_grad_batches batches of an
        # epoch (and at its end), counting from 0 at each epoch start and after a resume alike.
        rngs = self.permutation_rngs(batch_idx % self.trainer.accumulate_grad_batches)
        perms = gen_tgt_perms(max_len, hp.perm_num, hp.perm_forward, hp.perm_mirrored, *rngs)
        loss = self.training_loss(images, labels, perms)
        self.log('loss', loss, prog_bar=True, batch_size=len(labels))
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        # Linear scaling with a reference global batch (the original uses devices per node; we use the world size so
        # multi-node runs scale the same way).
        agb = self.trainer.accumulate_grad_batches
        devices = math.sqrt(self.trainer.world_size) if hp.lr_sqrt_devices else self.trainer.world_size
        lr = agb * devices * hp.batch_size / hp.lr_ref_batch * hp.lr
        # The ladder adapters train as the encoder did (its learning rate), the other adapters as the decoders.
        encoder = ('clip_model', 'adapter') if hp.adapter_type in ENCODER_SIDE else ('clip_model',)
        groups = {k: [] for k in ('clip_no_decay', 'clip_decay', 'dec_no_decay', 'dec_decay')}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            part = 'clip' if name.startswith(encoder) else 'dec'
            no_decay = p.ndim < 2 or any(k in name for k in _NO_DECAY_NAMES)
            groups[f'{part}_{"no_decay" if no_decay else "decay"}'].append(p)
        dec_lr = lr * hp.coef_lr
        param_groups = [
            {'params': groups['clip_no_decay'], 'weight_decay': 0.0, 'lr': lr},
            {'params': groups['clip_decay'], 'weight_decay': hp.weight_decay, 'lr': lr},
            {'params': groups['dec_no_decay'], 'weight_decay': 0.0, 'lr': dec_lr},
            {'params': groups['dec_decay'], 'weight_decay': hp.weight_decay * hp.coef_wd, 'lr': dec_lr},
        ]
        # The fused kernel: the same update, in one pass over all parameters (4x faster on CPU for the tiny model).
        fused = all(p.device.type in ('cpu', 'cuda') for g in param_groups for p in g['params'])
        optimizer = AdamW(param_groups, lr, betas=(0.9, 0.98), eps=1e-6, fused=fused)
        sched = OneCycleLR(
            optimizer,
            [lr, lr, dec_lr, dec_lr],
            self.trainer.estimated_stepping_batches,
            pct_start=hp.warmup_pct,
            cycle_momentum=False,
        )
        return {'optimizer': optimizer, 'lr_scheduler': {'scheduler': sched, 'interval': 'step'}}

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
        optimizer.zero_grad(set_to_none=True)

    # -- exact resume: the global RNGs (dropout; augmentation without DataLoader workers), of every rank ------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint['system'] = SYSTEM_NAME  # what strhub.models.load_from_checkpoint builds
        state = {
            'torch': torch.get_rng_state(),
            'numpy': _plain(np.random.get_state()),  # plain lists: loadable with weights_only=True
            'python': random.getstate(),
        }
        states = [state]
        if self._trainer is not None and self.trainer.world_size > 1:
            # Ranks consume their RNGs differently (batch shapes differ). Every rank saves (Lightning's saves are
            # collective), rank 0 writes.
            states = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(states, state)
        checkpoint['rng_states'] = states

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get('rng_states')
        if not states:
            return
        rank = self.trainer.global_rank if self._trainer is not None else 0
        state = states[rank % len(states)]
        torch.set_rng_state(state['torch'])
        name, keys, *rest = state['numpy']
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        random.setstate(state['python'])


def _plain(state: tuple) -> tuple:
    return tuple(v.tolist() if isinstance(v, np.ndarray) else v for v in state)


def _ce(logits: Tensor, targets: Tensor, pad_id: int) -> Tensor:
    return F.cross_entropy(logits.flatten(end_dim=1).float(), targets.flatten(), ignore_index=pad_id)


def permutation_loss(
    visual: List[Tensor], cross: List[Tensor], tgt_out: Tensor, pad_id: int, eos_id: int, cross_loss_w: float
) -> Tensor:
    """The original's loss over the permutations' logits (visual, and cross-modal unless ``cross`` is empty):
    token-weighted mean cross-entropy; only the first two orders (canonical and reverse) learn ``[E]``."""
    n = (tgt_out != pad_id).sum().item()
    loss, loss_numel = 0.0, 0
    for i, visual_logits in enumerate(visual):
        loss = loss + n * _ce(visual_logits, tgt_out, pad_id)
        if cross:
            loss = loss + cross_loss_w * n * _ce(cross[i], tgt_out, pad_id)
        loss_numel += n
        if i == 1:
            tgt_out = torch.where(tgt_out == eos_id, pad_id, tgt_out)
            n = (tgt_out != pad_id).sum().item()
    return loss / loss_numel


def _block_index(name: str) -> Optional[int]:
    """k for parameters of ``...resblocks.k.*``, else None."""
    parts = name.split('.')
    return int(parts[parts.index('resblocks') + 1]) if 'resblocks' in parts else None
