"""CLIP4STRSystem's training set-up against the spec: optimiser parameter groups and schedule (§6.4), and the
freezing of CLIP blocks with ``image_freeze_nlayer`` / ``text_freeze_nlayer`` (§4.4)."""

import warnings
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

# A tiny model with 3 blocks in each tower, so that freezing has blocks below and above the threshold.
TINY = [
    '+experiment=clip4str-tiny',
    'model.clip_arch.vision_layers=3',
    'model.clip_arch.text_layers=3',
    'model.clip_arch.vision_width=64',
    'model.clip_arch.text_width=64',
    'model.clip_arch.embed_dim=64',
]


@pytest.fixture
def build(compose_config):
    """``build(*overrides)``: the tiny system with these extra model overrides."""

    def build_(*overrides: str):
        return instantiate(compose_config(TINY + [f'model.{o}' for o in overrides]).model)

    return build_


# --- Optimiser and schedule (spec §6.4) ------------------------------------------------------------------------------

# Spec §6.4: a parameter is not decayed if it is 0-D/1-D or its name contains one of these.
NO_DECAY_SUBSTRINGS = ('bn', 'ln', 'bias', 'logit_scale', 'pos_queries', 'text_embed')


def configure(system, accumulate: int, world_size: int, steps: int):
    system.trainer = SimpleNamespace(
        accumulate_grad_batches=accumulate, world_size=world_size, estimated_stepping_batches=steps
    )
    return system.configure_optimizers()


def test_parameter_groups_weight_decay_and_learning_rates(build):
    hp = dict(lr=2e-3, batch_size=64, weight_decay=0.05, coef_lr=19.0, coef_wd=0.5, text_freeze_nlayer=1)
    system = build(*(f'{k}={v}' for k, v in hp.items()))
    config = configure(system, accumulate=3, world_size=2, steps=1000)
    optimizer = config['optimizer']
    lr = 3 * 2 * 64 / 512 * hp['lr']  # linear scaling with a reference global batch of 512

    names = {id(p): n for n, p in system.model.named_parameters()}
    expected = {k: set() for k in ('clip_no_decay', 'clip_decay', 'dec_no_decay', 'dec_decay')}
    for name, p in system.model.named_parameters():
        if p.requires_grad:
            part = 'clip' if 'clip_model' in name else 'dec'
            no_decay = p.ndim < 2 or any(s in name for s in NO_DECAY_SUBSTRINGS)
            expected[f'{part}_{"no_decay" if no_decay else "decay"}'].add(name)
    groups = optimizer.param_groups
    assert [{names[id(p)] for p in g['params']} for g in groups] == list(expected.values())
    assert [g['weight_decay'] for g in groups] == pytest.approx([0.0, 0.05, 0.0, 0.05 * 0.5])
    assert [g['max_lr'] for g in groups] == pytest.approx([lr, lr, 19 * lr, 19 * lr])
    assert [g['lr'] for g in groups] == pytest.approx([lr / 25, lr / 25, 19 * lr / 25, 19 * lr / 25])  # warm-up start
    assert all(g['betas'] == (0.9, 0.98) and g['eps'] == 1e-6 for g in groups)

    # The names the spec calls out, so that a wrong predicate cannot hide behind the one above.
    clip_no_decay, clip_decay, dec_no_decay, dec_decay = expected.values()
    assert {'clip_model.visual.class_embedding', 'clip_model.visual.ln_pre.weight', 'clip_model.ln_final.bias'} <= (
        clip_no_decay
    )
    assert {
        'clip_model.visual.positional_embedding',
        'clip_model.visual.proj',
        'clip_model.text_projection',
        'clip_model.visual.conv1.weight',
        'clip_model.transformer.resblocks.1.attn.in_proj_weight',
        'clip_model.visual.transformer.resblocks.0.mlp.c_fc.weight',
    } <= clip_decay
    assert {
        'visual_decoder.text_embed.embedding.weight',
        'visual_decoder.pos_queries',
        'visual_decoder.norm.weight',
        'cross_decoder.layers.0.linear1.bias',
    } <= dec_no_decay
    assert {'visual_decoder.head.weight', 'cross_decoder.layers.0.linear2.weight'} <= dec_decay
    # Frozen parameters (text_freeze_nlayer=1: token and position embeddings, block 0, logit_scale) are in no group.
    grouped = set().union(*expected.values())
    frozen = {n for n, p in system.model.named_parameters() if not p.requires_grad}
    assert 'clip_model.token_embedding.weight' in frozen and not frozen & grouped
    assert grouped | frozen == set(names.values())


def test_one_cycle_schedule(build):
    system = build('lr=5.12e-3', 'batch_size=100', 'warmup_pct=0.1', 'coef_lr=10.0')
    config = configure(system, accumulate=1, world_size=1, steps=200)
    sched = config['lr_scheduler']['scheduler']
    assert config['lr_scheduler']['interval'] == 'step'
    assert isinstance(sched, torch.optim.lr_scheduler.OneCycleLR) and sched.total_steps == 200
    assert not sched.cycle_momentum
    lr = 100 / 512 * 5.12e-3
    groups = config['optimizer'].param_groups
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # scheduler steps without optimizer steps
        for _ in range(19):  # warm-up: pct_start * total_steps - 1 steps to the peak
            sched.step()
        assert [g['lr'] for g in groups] == pytest.approx([lr, lr, 10 * lr, 10 * lr])
        for _ in range(180):
            sched.step()
    assert [g['lr'] for g in groups] == pytest.approx([lr / 25e4, lr / 25e4, lr / 2.5e4, lr / 2.5e4])


# --- Freezing (spec §4.4) --------------------------------------------------------------------------------------------


def frozen_names(system):
    return {n[len('model.clip_model.') :] for n, p in system.named_parameters() if not p.requires_grad}


def block_params(system, prefix: str, blocks):
    return {
        n for n, _ in system.model.clip_model.named_parameters() if any(n.startswith(f'{prefix}{k}.') for k in blocks)
    }


def eval_modules(system):
    """Names (under ``clip_model``) of the modules not in training mode."""
    return {n for n, m in system.model.clip_model.named_modules() if not m.training}


def test_nothing_frozen_at_minus_one(build):
    system = build('image_freeze_nlayer=-1', 'text_freeze_nlayer=-1').train()
    assert frozen_names(system) == set() and eval_modules(system) == set()


def test_lower_blocks_frozen_and_kept_in_eval_mode(build):
    system = build('image_freeze_nlayer=2', 'text_freeze_nlayer=1')
    visual = {'visual.class_embedding', 'visual.positional_embedding'}
    visual |= block_params(system, 'visual.transformer.resblocks.', (0, 1))
    text = {'token_embedding.weight', 'positional_embedding', 'logit_scale'}
    text |= block_params(system, 'transformer.resblocks.', (0,))
    assert frozen_names(system) == visual | text  # conv1, ln_pre, ln_post, proj, ln_final, text_projection train
    assert all(p.requires_grad for n, p in system.named_parameters() if '_decoder.' in n)

    system.eval()
    system.train()  # Lightning's train() at every epoch start must not wake the frozen blocks
    frozen_blocks = ('visual.transformer.resblocks.0', 'visual.transformer.resblocks.1', 'transformer.resblocks.0')
    assert eval_modules(system) == {
        n for n, _ in system.model.clip_model.named_modules() if n.startswith(frozen_blocks)
    }
    assert system.model.visual_decoder.training and system.model.clip_model.visual.transformer.resblocks[2].training
    system.eval()
    assert not any(m.training for m in system.modules())


def test_twelve_freezes_whole_towers(build):
    system = build('image_freeze_nlayer=12', 'text_freeze_nlayer=12').train()
    assert frozen_names(system) == {n for n, _ in system.model.clip_model.named_parameters()}
    # Text: all blocks and ln_final stay in eval mode; image: the blocks (below 12, i.e. all of them here).
    blocks = ('visual.transformer.resblocks.', 'transformer.resblocks.')
    assert {n for n in eval_modules(system) if n.startswith(blocks)} == {
        n for n, _ in system.model.clip_model.named_modules() if n.startswith(blocks)
    }
    assert 'ln_final' in eval_modules(system)


def test_full_freeze_threshold_is_twelve_whatever_the_depth(build):
    """The original freezes a whole text tower only from 12 on: with 3 blocks, 3 freezes the blocks but not the
    text head (ln_final, text_projection), as "6" on the 24 text blocks of ViT-H/14 freezes 6 of them."""
    system = build('text_freeze_nlayer=3', 'image_freeze_nlayer=-1')
    frozen = frozen_names(system)
    assert block_params(system, 'transformer.resblocks.', (0, 1, 2)) <= frozen
    assert not frozen & {'ln_final.weight', 'ln_final.bias', 'text_projection'}
