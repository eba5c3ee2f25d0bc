"""Weight-space averaging (strhub.models.averaging, tools/average_weights.py): the blend is the weighted sum of the
weights, loads as a model, and checkpoints of different networks are refused with the key or charset named."""

import pytest
import torch
from helpers import load_tool

from strhub.models import load_from_checkpoint
from strhub.models.averaging import WeightsError, average_checkpoints
from strhub.models.checkpoint import CheckpointError, read_checkpoint


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    """The shipped tiny model in float32 (A) and a copy with every floating-point weight shifted by 1 (B)."""
    tmp = tmp_path_factory.mktemp('avg')
    ckpt = read_checkpoint('clip4str-tiny')
    a = {**ckpt, 'state_dict': {k: v.float() if v.is_floating_point() else v for k, v in ckpt['state_dict'].items()}}
    b = {**a, 'state_dict': {k: v + 1 if v.is_floating_point() else v for k, v in a['state_dict'].items()}}
    b['hyper_parameters'] = {**a['hyper_parameters'], 'lr': 1e-4}
    torch.save(a, tmp / 'a.ckpt')
    torch.save(b, tmp / 'b.ckpt')
    return tmp, a


def test_weighted_sum_loads_as_a_model(pair):
    tmp, a = pair
    out, weights, differing = average_checkpoints(
        [tmp / 'a.ckpt', tmp / 'b.ckpt'], tmp / 'ab.ckpt', [0.25, 0.75], half=False
    )
    assert weights == [0.25, 0.75] and differing == {'lr': (a['hyper_parameters']['lr'], 1e-4)}
    blend = read_checkpoint(out)
    assert blend['hyper_parameters'] == a['hyper_parameters']
    for k, v in a['state_dict'].items():
        expected = v + 0.75 if v.is_floating_point() else v
        assert blend['state_dict'][k].dtype == (torch.float32 if v.is_floating_point() else v.dtype)
        torch.testing.assert_close(blend['state_dict'][k], expected, rtol=0, atol=1e-6)
    # weights 1 and 0 give the first model back: the same outputs
    average_checkpoints([tmp / 'a.ckpt', tmp / 'b.ckpt'], tmp / 'a_again.ckpt', [1, 0], half=False)
    images = torch.rand(2, 3, 32, 128) * 2 - 1
    with torch.no_grad():
        ref = load_from_checkpoint(tmp / 'a.ckpt')(images)
        torch.testing.assert_close(load_from_checkpoint(tmp / 'a_again.ckpt')(images), ref, rtol=0, atol=0)
    # default: float16, equal weights
    half, weights, _ = average_checkpoints([tmp / 'a.ckpt', tmp / 'b.ckpt'], tmp / 'half.ckpt')
    assert weights == [0.5, 0.5]
    w = read_checkpoint(half)['state_dict']
    k = next(k for k, v in a['state_dict'].items() if v.is_floating_point())
    assert w[k].dtype == torch.float16
    torch.testing.assert_close(w[k].float(), a['state_dict'][k] + 0.5, rtol=1e-3, atol=1e-3)


def test_refuses_other_networks_and_bad_weights(pair):
    tmp, a = pair
    sd = a['state_dict']
    name = next(k for k, v in sd.items() if v.is_floating_point() and v.dim() == 2)
    cases = {
        'reshaped': ({**a, 'state_dict': {**sd, name: sd[name][:, :-1]}}, name),
        'missing': ({**a, 'state_dict': {k: v for k, v in sd.items() if k != name}}, f'missing {name}'),
        'charset': (
            {
                **a,
                'hyper_parameters': {
                    **a['hyper_parameters'],
                    'charset_train': a['hyper_parameters']['charset_train'][::-1],
                },
            },
            'another charset',
        ),
    }
    for label, (ckpt, message) in cases.items():
        torch.save(ckpt, tmp / f'{label}.ckpt')
        with pytest.raises(CheckpointError, match=message):
            average_checkpoints([tmp / 'a.ckpt', tmp / f'{label}.ckpt'], tmp / 'x.ckpt')
    assert not (tmp / 'x.ckpt').exists()
    for weights, message in (([0.5], '1 weights for 2'), ([0.7, 0.7], 'sum to 1'), ([1.5, -0.5], '>= 0')):
        with pytest.raises(WeightsError, match=message):
            average_checkpoints([tmp / 'a.ckpt', tmp / 'b.ckpt'], tmp / 'x.ckpt', weights)
    with pytest.raises(WeightsError, match='two checkpoints'):
        average_checkpoints([tmp / 'a.ckpt'], tmp / 'x.ckpt')


def test_cli(pair, capsys):
    tmp, _ = pair
    tool = load_tool('average_weights')
    for weights, message in ((['1'], '1 weights for 2 checkpoints'), (['0.7', '0.7'], 'sum to 1')):
        with pytest.raises(SystemExit) as e:
            argv = [str(tmp / 'a.ckpt'), str(tmp / 'b.ckpt'), '--weights', *weights, '--out', str(tmp / 'c.ckpt')]
            tool.run_cli(tool.main, argv, prog=tool.PROG)
        err = capsys.readouterr().err
        assert e.value.code == 2 and 'average_weights.py: error: ' in err and message in err and 'Traceback' not in err
    assert (
        tool.main([str(tmp / 'a.ckpt'), 'clip4str-tiny', '--weights', '0.6', '0.4', '--out', str(tmp / 'c.ckpt')]) == 0
    )
    out = capsys.readouterr().out
    assert 'wrote' in out and '0.6000' in out and load_from_checkpoint(tmp / 'c.ckpt') is not None
