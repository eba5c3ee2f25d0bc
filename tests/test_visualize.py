"""Attention maps (``strhub.models.attention_maps``, the decoder's ``CrossAttentionRecorder``) and
``tools/visualize.py``, on the original's fixture checkpoint (224x224: a 14x14 patch grid, random weights) and the
shipped ``clip4str-tiny`` (32x128: a 1x16 grid, reads rendered words)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from strhub.data.transforms import get_transform
from strhub.models import load_from_checkpoint
from strhub.models.attention_maps import attention_maps
from strhub.models.parseq import decoder as decoder_module
from strhub.models.parseq.decoder import CrossAttentionRecorder
from strhub.read import load_image
from helpers import FIXTURES, FIXTURE_CKPT, load_tool, require_fixtures

IMAGE_NAMES = ['img0_hello.png', 'img2_Text.png']
GRIDS = {'fixture': (14, 14), 'tiny': (1, 16)}


@pytest.fixture(scope='module')
def systems():
    require_fixtures(IMAGE_NAMES)
    return {'fixture': load_from_checkpoint(FIXTURE_CKPT), 'tiny': load_from_checkpoint('clip4str-tiny')}


@pytest.fixture(scope='module')
def tool():
    return load_tool('visualize')


def _input(system, name='img0_hello.png'):
    return get_transform(tuple(system.hparams.img_size))(load_image(FIXTURES / name))


@pytest.mark.parametrize('which', list(GRIDS))
def test_recorder_leaves_logits_unchanged(systems, which):
    model = systems[which].model
    images = torch.stack([_input(systems[which], n) for n in IMAGE_NAMES])
    with torch.no_grad():
        plain = model.forward_branches(images)
        with CrossAttentionRecorder() as rec:
            recorded = model.forward_branches(images)
        after = model.forward_branches(images)
    assert rec.weights
    assert all(torch.equal(a, b) for a, b in zip(plain, recorded))
    assert all(torch.equal(a, b) for a, b in zip(plain, after))


def test_recorded_weights_are_the_attention_used(systems, monkeypatch):
    """Weights x values through the output projection give what the fused attention returned at each call."""
    model = systems['tiny'].model
    assert all(len(d.layers) == 1 for d in (model.visual_decoder, model.cross_decoder))  # query stream calls only
    outputs = []
    attend = decoder_module.attend

    def spy(attn, x, kv, mask=None):
        out = attend(attn, x, kv, mask)
        if any(attn is d.layers[0].cross_attn for d in (model.visual_decoder, model.cross_decoder)):
            outputs.append((attn, kv[1], out))
        return out

    monkeypatch.setattr(decoder_module, 'attend', spy)
    with torch.no_grad(), CrossAttentionRecorder() as rec:
        model.forward_branches(_input(systems['tiny'])[None])
    assert len(outputs) == len(rec.weights) > 0
    for (attn, values, out), (layer, weights) in zip(outputs, rec.weights):
        assert layer.cross_attn is attn
        n, _, length, _ = weights.shape
        mixed = (weights @ values).transpose(1, 2).reshape(n, length, -1)
        torch.testing.assert_close(attn.out_proj(mixed), out, rtol=0, atol=1e-5)


def test_recorder_is_exclusive():
    with CrossAttentionRecorder(), pytest.raises(RuntimeError, match='already active'):
        with CrossAttentionRecorder():
            pass


@pytest.mark.parametrize('which', list(GRIDS))
def test_maps(systems, which):
    system = systems[which]
    x = _input(system)
    maps = attention_maps(system.model, x)
    assert maps.grid == GRIDS[which]
    with torch.no_grad():
        visual, final = system.model.forward_branches(x[None])
    for branch, logits in ((maps.visual, visual), (maps.cross, final)):
        [text], [confidence] = system.decode_logits(logits)
        assert branch.text == text  # one image alone: what tools/read.py --batch_size 1 reads
        assert branch.confidence == pytest.approx(confidence, rel=1e-5)
        steps = len(text) + 1  # the characters and [E]
        assert branch.tokens == list(text) + ['[E]']
        assert branch.patches.shape == (steps, *GRIDS[which]) and branch.cls.shape == branch.probs.shape == (steps,)
        total = branch.patches.sum((1, 2)) + branch.cls
        if branch is maps.cross:
            assert branch.caption.shape == (steps, system.model.bpe.context_length)
            total += branch.caption.sum(1)
        np.testing.assert_allclose(total, 1, atol=1e-5)
    assert maps.visual.caption is None
    assert maps.caption_tokens[0] == '[SOT]' and '[EOT]' in maps.caption_tokens


def test_tiny_model_looks_left_to_right(systems):
    maps = attention_maps(systems['tiny'].model, _input(systems['tiny'], 'img1_clip4str.png'))
    for branch in (maps.visual, maps.cross):
        assert branch.text == 'clip4str'
        columns = branch.patches[:8, 0].argmax(-1)  # where 'c', 'l', 'i', ..., 'r' look most
        assert list(columns) == sorted(columns) and columns[0] < columns[-1]
    assert maps.caption_tokens[:4] == ['[SOT]', 'clip', '4', 'str']  # the caption, in CLIP's BPE tokens


@pytest.mark.parametrize('decode_ar, refine_iters', [(True, 0), (False, 1), (False, 0)])
def test_maps_follow_the_decoding_mode(systems, decode_ar, refine_iters):
    model = systems['tiny'].model
    model.decode_ar, model.refine_iters = decode_ar, refine_iters
    try:
        maps = attention_maps(model, _input(systems['tiny']))
    finally:
        model.decode_ar, model.refine_iters = True, 1
    for branch in (maps.visual, maps.cross):
        assert branch.patches.shape == (len(branch.text) + 1, 1, 16)
        total = branch.patches.sum((1, 2)) + branch.cls + (0 if branch.caption is None else branch.caption.sum(1))
        np.testing.assert_allclose(total, 1, atol=1e-5)


def test_visual_only_model(systems, tool, tmp_path, monkeypatch):
    system = systems['tiny']
    monkeypatch.setattr(system.model, 'cross_decoder', None)  # use_language_model=False: PARSeq-like
    image = load_image(FIXTURES / 'img0_hello.png')
    maps = attention_maps(system.model, get_transform(tuple(system.hparams.img_size))(image))
    assert maps.cross is None and maps.caption_tokens == []
    np.testing.assert_allclose(maps.visual.patches.sum((1, 2)) + maps.visual.cls, 1, atol=1e-5)
    assert tool.draw(image, maps, tmp_path / 'a.png') == {'visual': len(maps.visual.text) + 1, 'caption': 0}


@pytest.mark.parametrize('which', list(GRIDS))
def test_draw_one_panel_per_step(systems, tool, tmp_path, which):
    system = systems[which]
    image = load_image(FIXTURES / 'img0_hello.png')
    maps = attention_maps(system.model, get_transform(tuple(system.hparams.img_size))(image))
    layout = tool.draw(image, maps, tmp_path / 'a.png', columns=4, caption=which == 'fixture')
    steps = {'visual': len(maps.visual.text) + 1, 'cross': len(maps.cross.text) + 1}
    assert layout == {**steps, 'caption': int(which == 'fixture')}
    with Image.open(tmp_path / 'a.png') as figure:
        assert figure.width == 4 * tool.PANEL_WIDTH * 100


def test_cli_skips_bad_images(tool, tmp_path, capsys):
    (tmp_path / 'broken.png').write_bytes(b'not an image')
    out = tmp_path / 'out'
    args = [
        str(FIXTURE_CKPT),
        str(tmp_path / 'missing.png'),
        str(tmp_path / 'broken.png'),
        str(FIXTURES / 'img0_hello.png'),
    ]
    assert tool.main([*args, '--out', str(out), '--device', 'cpu']) == 0
    assert [p.name for p in out.iterdir()] == ['img0_hello.png']
    stdout, stderr = capsys.readouterr()
    assert len(stdout.splitlines()) == 1 and 'class token' in stdout
    assert 'missing.png: no such file or directory' in stderr and 'broken.png: not an image' in stderr
    assert 'wrote 1 figure(s)' in stderr and 'skipped 2' in stderr


def test_cli_shipped_model_by_name(tool, tmp_path, capsys):
    assert (
        tool.main(['clip4str-tiny', str(FIXTURES), '--out', str(tmp_path), '--no_caption', 'refine_iters:int=0']) == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(n).stem + '.png' for n in _fixture_images())
    assert "cross-modal 'clip4str'" in capsys.readouterr().out


def test_draw_second_look_views(tool, tmp_path):
    from strhub.models.second_look import look_again
    from strhub.read import load_image

    system = load_from_checkpoint('clip4str-tiny')
    transform = get_transform((32, 128))
    image = load_image(FIXTURES / 'img0_hello.png')
    looks = look_again(system, image, transform)
    # The word was read, so both cuts to its columns are there, then the padding and the trimmed rows.
    assert [name for name, *_ in looks] == ['cut to the word', 'cut closer', 'padded', 'rows trimmed']
    assert all(text and 0 < confidence <= 1 for _, _, text, confidence in looks)
    layout = tool.draw(
        image, attention_maps(system.model, transform(image)), tmp_path / 'a.png', second_look=(1, looks)
    )
    assert layout['views'] == 4 and (tmp_path / 'a.png').stat().st_size > 0
    assert (
        tool.main(['clip4str-tiny', str(FIXTURES), '--out', str(tmp_path / 'cli'), '--second_look', '--device', 'cpu'])
        == 0
    )


def _fixture_images():
    return sorted(p.name for p in FIXTURES.glob('*.png'))


@pytest.mark.parametrize(
    'args, message',
    [
        ([str(FIXTURE_CKPT), 'x.png', '--out', 'o', '--columns', '0'], '--columns must be >= 1 (got 0)'),
        ([str(FIXTURE_CKPT), '--out', 'o'], 'no image paths given'),
        (['missing.ckpt', 'x.png', '--out', 'o'], 'checkpoint not found'),
        ([str(FIXTURE_CKPT), 'x.png', '--out', str(FIXTURE_CKPT)], 'not a folder'),
        ([str(FIXTURE_CKPT), 'x.png', '--out', 'o', '--refine_iters', '-1'], '--refine_iters must be >= 0'),
        ([str(FIXTURE_CKPT), 'x.png'], 'the following arguments are required: --out'),
    ],
)
def test_cli_bad_arguments(tool, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        tool.run_cli(tool.main, args, prog=tool.PROG)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('visualize.py: error: ') and message in err[-1]
    if 'required' not in message:  # argparse's own errors come after its usage line
        assert len(err) == 1
