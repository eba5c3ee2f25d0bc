"""The STR-Adapter variant (spec §9): CLIP frozen, an adapter before the visual decoder, no language model; the
same system, decoder and training step as CLIP4STR."""

import pytest
import torch
from hydra.utils import instantiate

from helpers import SMALL_MODEL

from strhub.models import load_from_checkpoint
from strhub.models.clip4str.adapters import ADAPTER_TYPES, prune_block
from strhub.models.parseq import gen_tgt_perms

ADAPTER = [
    *SMALL_MODEL,
    'model.clip_arch.vision_layers=2',
    'model.use_language_model=false',
    'model.image_freeze_nlayer=12',
    'model.text_freeze_nlayer=12',
    'model.block_ids=[0,1]',
    'model.prune_reduction=2',
    'model.dropout=0',
]
LABELS = ['hello', 'a1', 'world42']


def _system(compose_config, adapter_type, *overrides):
    torch.manual_seed(0)
    config = compose_config([*ADAPTER, f'model.adapter_type={adapter_type}', *overrides])
    return instantiate(config.model)


@pytest.mark.parametrize('adapter_type', ADAPTER_TYPES)
def test_shapes_and_what_trains(adapter_type, compose_config):
    system = _system(compose_config, adapter_type)
    model = system.model
    assert model.cross_decoder is None and model.adapter is not None
    assert not any(p.requires_grad for p in model.clip_model.parameters())  # the CLIP is frozen
    assert all(p.requires_grad for p in model.adapter.parameters())
    assert all(p.requires_grad for p in model.visual_decoder.parameters())
    images = torch.rand(2, 3, *system.hparams.img_size)
    memory = model.encode(images)
    assert memory.shape == (2, 17, 64)  # 16 patches + class token, embed dim 64
    with torch.no_grad():
        assert system.eval()(images).shape[::2] == (2, len(system.tokenizer) - 2)


@pytest.mark.parametrize('adapter_type', ['linear', 'ladder_pruning'])
def test_one_optimizer_step(adapter_type, compose_config):
    system = _system(compose_config, adapter_type, 'model.lr_ref_batch=256', 'model.lr_sqrt_devices=true')
    perms = gen_tgt_perms(max(map(len, LABELS)), 6, True, True, *system.permutation_rngs(0))

    class Trainer:  # what configure_optimizers reads
        accumulate_grad_batches, world_size, estimated_stepping_batches = 1, 4, 10

    system.trainer = Trainer()
    optimizer = system.configure_optimizers()['optimizer']
    # The original's rule: lr x accumulate x sqrt(devices) x batch / 256; the ladder side network with the encoder's
    # learning rate, the linear adapter with the decoders' (coef_lr times it).
    lr = 1 * 2 * system.hparams.batch_size / 256 * system.hparams.lr
    adapter = set(system.model.adapter.parameters())
    group_lr = {g['max_lr'] for g in optimizer.param_groups if adapter & set(g['params'])}
    assert group_lr == ({lr} if adapter_type == 'ladder_pruning' else {lr * system.hparams.coef_lr})
    before = {k: v.clone() for k, v in system.state_dict().items()}
    system.train()
    images = torch.rand(3, 3, *system.hparams.img_size)
    loss = system.training_loss(images, LABELS, perms)
    loss.backward()
    optimizer.step()
    after = system.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert torch.isfinite(loss)
    assert not {k for k in changed if k.startswith('model.clip_model.')}
    assert any(k.startswith('model.adapter.') for k in changed)
    assert any(k.startswith('model.visual_decoder.') for k in changed)


@pytest.mark.parametrize('adapter_type', ['attention', 'ladder'])
def test_save_load_round_trip(adapter_type, tmp_path, compose_config):
    system = _system(compose_config, adapter_type).eval()
    path = tmp_path / 'adapter.ckpt'
    torch.save(
        {'system': 'clip4str', 'state_dict': system.state_dict(), 'hyper_parameters': dict(system.hparams)}, path
    )
    loaded = load_from_checkpoint(path)
    images = torch.rand(2, 3, *system.hparams.img_size)
    with torch.no_grad():
        assert torch.equal(loaded(images), system(images))
    assert loaded.hparams.adapter_type == adapter_type


def test_original_release_names(tmp_path, compose_config):
    """The original's STR-Adapter checkpoints: decoder, head, text_embed and pos_queries at the top level, its
    hyper-parameters named str_adapter; recognised by what they hold and loaded with the CLIP frozen. (A release
    records no CLIP architecture: the head width is OpenAI's 64, as in every released CLIP.)"""
    system = _system(compose_config, 'ladder_pruning', 'model.clip_arch.head_width=64').eval()
    renames = {'visual_decoder.head.': 'head.', 'visual_decoder.text_embed.': 'text_embed.'}
    renames.update({'visual_decoder.pos_queries': 'pos_queries', 'visual_decoder.': 'decoder.'})
    released = {}
    for key, value in system.state_dict().items():
        key = key[len('model.') :]
        old = next((o for o in renames if key.startswith(o)), None)
        released[renames[old] + key[len(old) :] if old else key] = value
    assert 'decoder.layers.0.cross_attn.in_proj_weight' in released and 'adapter.alpha' in released
    hp = {'name': 'str_adapter', 'charset_train': system.hparams.charset_train, 'img_size': [32, 128]}
    hp.update(adapter_type='ladder_pruning', block_ids=[0, 1], prune_reduction=2, clip_pretrained='/nowhere/B16.pt')
    path = tmp_path / 'str_adapter_release.ckpt'
    torch.save({'state_dict': released, 'hyper_parameters': hp}, path)
    loaded = load_from_checkpoint(path)
    assert loaded.hparams.image_freeze_nlayer == 12 and loaded.hparams.lr_sqrt_devices
    images = torch.rand(2, 3, 32, 128)
    with torch.no_grad():
        assert torch.equal(loaded(images), system(images))


def test_pruning_keeps_the_largest_rows(compose_config):
    """Pruning by 1 keeps every row in order (the pruned block computes the CLIP block); by 2 it keeps, for q, k, v
    and c_fc, the rows of largest L1 norm, in their order."""
    block = _system(compose_config, 'linear').model.clip_model.visual.transformer.resblocks[0]
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        torch.testing.assert_close(prune_block(block, 1)(x), block(x), atol=1e-5, rtol=1e-5)
    pruned = prune_block(block, 2)
    q = block.attn.in_proj_weight[:64]
    rows = q.abs().sum(1).topk(32).indices.sort().values
    assert torch.equal(pruned.attn.in_proj_weight[:32], q[rows])
    assert pruned.mlp.c_fc.weight.shape == (128, 64) and pruned.mlp.c_proj.weight.shape == (64, 128)


def test_bad_adapter_options(compose_config):
    with pytest.raises(Exception, match='adapter_type must be null or one of linear'):
        _system(compose_config, 'lora')
    with pytest.raises(Exception, match=r'block_ids \[0, 7\] must name blocks 0..1'):
        _system(compose_config, 'ladder', 'model.block_ids=[0,7]')
