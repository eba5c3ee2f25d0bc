"""Loading the CLIP weights users have: OpenAI JIT / state-dict .pt, OpenCLIP .bin / .safetensors, and bad files."""

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import save_file

from strhub.models.clip import (
    CLIPArch,
    CLIPWeightsError,
    build_clip,
    encode_image,
    encode_text,
    init_sincos_pos_embed,
    load_clip,
    sincos_pos_embed,
)

# Files carry no head count: heads = width // 64, so the smallest widths are 64.
ARCH = CLIPArch(
    embed_dim=16, image_size=32, patch_size=8, vision_width=64, vision_layers=2, text_width=64, text_layers=2
)


@pytest.fixture(scope='module')
def reference():
    torch.manual_seed(0)
    return build_clip(ARCH).eval()


def _half_sd(model):
    # OpenAI files store float16 weights plus three non-parameter entries.
    sd = {k: v.half() for k, v in model.state_dict().items()}
    sd.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    return sd


def _outputs(model):
    torch.manual_seed(1)
    images, tokens = torch.randn(2, 3, 32, 32), torch.randint(0, 49408, (2, 16))
    with torch.no_grad():
        return encode_image(model, images), encode_text(model, tokens)


def _assert_same(model, reference):
    expected = {k: v.half().float() for k, v in reference.state_dict().items()}
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    for a, b in zip(_outputs(model), _outputs(build_from(expected))):
        torch.testing.assert_close(a, b)


def build_from(sd):
    m = build_clip(ARCH).eval()
    m.load_state_dict(sd)
    return m


@pytest.mark.parametrize('fmt', ['openai_state_dict', 'wrapped_model', 'openclip_bin', 'safetensors', 'openai_jit'])
def test_formats(tmp_path, reference, fmt):
    if fmt == 'openai_state_dict':
        path = tmp_path / 'ViT-T-8.pt'
        torch.save(_half_sd(reference), path)
    elif fmt == 'wrapped_model':
        path = tmp_path / 'clip.pt'
        torch.save({'model': _half_sd(reference)}, path)
    elif fmt == 'openclip_bin':
        path = tmp_path / 'OpenCLIP-ViT-T-8.bin'
        torch.save({f'module.{k}': v for k, v in reference.state_dict().items()}, path)
    elif fmt == 'safetensors':
        path = tmp_path / 'open_clip_model.safetensors'
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    else:
        path = tmp_path / 'ViT-T-8-jit.pt'
        traced = torch.jit.trace(
            reference, (torch.randn(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long)), check_trace=False
        )
        traced.save(str(path))
    model = load_clip(path)  # architecture inferred from the shapes
    _assert_same(model.eval(), reference)
    assert isinstance(load_clip(path, ARCH), torch.nn.Module)  # and accepted with the configured arch


def test_heads_follow_width_over_64():
    # ViT-H/14 widths: 1280 // 64 = 20 vision heads (not open_clip's 16), 1024 // 64 = 16 text heads.
    arch = CLIPArch(
        embed_dim=1024,
        image_size=28,
        patch_size=14,
        vision_width=1280,
        vision_layers=1,
        text_width=1024,
        text_layers=1,
        vocab_size=10,
    )
    model = build_clip(arch)
    assert model.visual.transformer.resblocks[0].attn.num_heads == 20
    assert model.transformer.resblocks[0].attn.num_heads == 16
    assert type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == 'QuickGELU'


def test_missing_file(tmp_path):
    with pytest.raises(CLIPWeightsError, match='not found: .*ViT-B-16.pt'):
        load_clip(tmp_path / 'ViT-B-16.pt')


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / 'garbage.pt'
    path.write_bytes(b'not a torch file')
    with pytest.raises(CLIPWeightsError, match='cannot read CLIP weights from .*garbage.pt'):
        load_clip(path)


def test_other_architecture(tmp_path, reference):
    path = tmp_path / 'ViT-T-8.pt'
    torch.save(_half_sd(reference), path)
    wrong = CLIPArch(**{**ARCH.to_dict(), 'vision_layers': 3})
    with pytest.raises(CLIPWeightsError, match='another CLIP architecture.*vision_layers: config 3 vs file 2'):
        load_clip(path, wrong)


def test_missing_and_unexpected_keys(tmp_path, reference):
    sd = _half_sd(reference)
    del sd['ln_final.weight']
    sd['visual.extra.weight'] = torch.zeros(1)
    path = tmp_path / 'broken.pt'
    torch.save(sd, path)
    with pytest.raises(CLIPWeightsError) as e:
        load_clip(path)
    msg = str(e.value)
    assert 'broken.pt' in msg and 'ln_final.weight' in msg


def test_not_a_vit_clip(tmp_path):
    path = tmp_path / 'resnet.pt'
    torch.save({'visual.layer1.0.conv1.weight': torch.zeros(1)}, path)
    with pytest.raises(CLIPWeightsError, match='resnet.pt.*not a ViT CLIP'):
        load_clip(path)


def test_sincos_position_codes():
    codes = sincos_pos_embed((2, 3), 8)  # rows in channels 0..3, columns in 4..7
    assert codes.shape == (6, 8) and codes.abs().max() <= 1
    grid = codes.view(2, 3, 8)
    assert torch.equal(grid[:, 0, :4], grid[:, 2, :4]) and not torch.equal(grid[0, :, :4], grid[1, :, :4])
    assert torch.equal(grid[0, :, 4:], grid[1, :, 4:]) and not torch.equal(grid[:, 0, 4:], grid[:, 1, 4:])
    assert len({tuple(c.tolist()) for c in codes}) == 6

    model = build_clip(ARCH)
    init_sincos_pos_embed(model)
    pos = model.visual.positional_embedding
    assert torch.equal(pos[0], torch.zeros(64)) and torch.equal(pos[1:], sincos_pos_embed((4, 4), 64))
    assert pos.requires_grad  # a starting point, still learned


def test_sincos_init_refuses_pretrained_weights(tmp_path, reference, compose_config):
    path = tmp_path / 'clip.pt'
    torch.save(reference.state_dict(), path)
    config = compose_config(
        [
            '+experiment=clip4str-tiny',
            'model.pos_embed_init=sincos',
            f'model.clip_pretrained={path}',
            'model.clip_arch=null',
            'model.img_size=[32,32]',
        ]
    )
    with pytest.raises(Exception, match='pos_embed_init=sincos is for a random CLIP'):
        instantiate(config.model)
    with pytest.raises(Exception, match="pos_embed_init must be null or 'sincos'"):
        instantiate(compose_config(['+experiment=clip4str-tiny', 'model.pos_embed_init=learned']).model)


# --- Another input size than the file's (long text from a square CLIP) -----------------------------------------------


def test_other_image_size_resizes_the_position_embedding(tmp_path, reference, caplog):
    path = tmp_path / 'clip.pt'
    torch.save(_half_sd(reference), path)
    with caplog.at_level('INFO', logger='strhub.models.clip'):
        model = load_clip(path, ARCH, image_size=(32, 64)).eval()  # 4x4 patches -> 4x8
    assert model.visual.image_size == (32, 64) and model.visual.grid_size == (4, 8)
    assert 'resized from a 4x4 to a 4x8 patch grid' in caplog.text
    pos, ref = model.visual.positional_embedding, reference.visual.positional_embedding.half().float()
    assert pos.shape == (1 + 32, 64) and torch.equal(pos[0], ref[0])  # class token kept
    # Bicubic resizing of each channel as an image: doubling the width keeps every row's mean and range roughly,
    # and an exact copy where the grid is unchanged (the height).
    grid = pos[1:].T.reshape(64, 4, 8)
    torch.testing.assert_close(grid.mean(2), ref[1:].T.reshape(64, 4, 4).mean(2), atol=0.05, rtol=0)
    with torch.no_grad():
        assert encode_image(model, torch.randn(2, 3, 32, 64)).shape == (2, 33, 16)
    # All other weights as in the file
    for k, v in model.state_dict().items():
        if k != 'visual.positional_embedding':
            assert torch.equal(v, reference.state_dict()[k].half().float()), k
    # Loading at the file's own size is unchanged
    _assert_same(load_clip(path, ARCH, image_size=(32, 32)), reference)


def test_other_image_size_errors(tmp_path, reference, compose_config):
    path = tmp_path / 'clip.pt'
    torch.save(reference.state_dict(), path)
    with pytest.raises(CLIPWeightsError, match=r'img_size \[32, 60\] is not a whole number of the CLIP patches'):
        load_clip(path, ARCH, image_size=(32, 60))
    wrong = CLIPArch(**{**ARCH.to_dict(), 'image_size': [32, 64]})  # the file is 32x32
    with pytest.raises(CLIPWeightsError, match=r'image_size \[32, 64\] .* does not fit the 16 patch position'):
        load_clip(path, wrong)


def test_system_at_another_img_size_from_a_clip_file(tmp_path, reference, compose_config):
    """model.img_size=[32,64] with a 32x32 CLIP file: the system is built at 32x64 and records it."""
    path = tmp_path / 'clip.pt'
    torch.save(reference.state_dict(), path)
    config = compose_config(
        [
            '+experiment=clip4str-tiny',
            f'model.clip_pretrained={path}',
            'model.clip_arch=null',
            'model.pos_embed_init=null',
            'model.img_size=[32,64]',
        ]
    )
    system = instantiate(config.model).eval()
    assert system.hparams.clip_arch['image_size'] == [32, 64]
    with torch.no_grad():
        assert system(torch.rand(1, 3, 32, 64)).shape[0] == 1
