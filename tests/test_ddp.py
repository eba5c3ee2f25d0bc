"""Two-process DDP on CPU (gloo) with gradient accumulation: learning-rate scaling, rank synchrony, permutations of
each rank's own, and exact resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from helpers import REPO


def _run(out: Path, data_root: Path, *resume: str) -> None:
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tests' / 'ddp_check.py'), str(out), str(data_root), *resume],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_two_process_ddp_with_accumulation(tmp_path, synthetic_root):
    _run(tmp_path, synthetic_root)
    ranks = [json.loads((tmp_path / f'full_rank{r}.json').read_text()) for r in (0, 1)]
    # max_steps counts optimizer steps (12 // 2 devices = 6, as the original divides it by the GPU count).
    assert [r['world_size'] for r in ranks] == [2, 2] and [r['global_step'] for r in ranks] == [6, 6]
    # lr = accumulate (2) x devices (2) x batch (4) / 512 x model.lr; the decoders get coef_lr times that.
    for r in ranks:
        lr = 2 * 2 * 4 / 512 * r['model_lr']
        assert abs(r['max_lr'] - lr) < 1e-12
        for enc_nd, enc_d, dec_nd, dec_d in r['lrs']:  # OneCycle below the peak; decoders at coef_lr x
            assert enc_nd == enc_d <= lr and abs(dec_nd - r['coef_lr'] * enc_nd) < 1e-12 and dec_nd == dec_d
    assert ranks[0]['lrs'] == ranks[1]['lrs']
    # Both ranks end with identical weights.
    assert ranks[0]['param_sum'] == ranks[1]['param_sum']
    assert ranks[0]['param_abs_sum'] == ranks[1]['param_abs_sum']
    # Each rank draws its own permutations (the original's per-process generators did), different at every batch.
    assert all(p0 != p1 for p0, p1 in zip(ranks[0]['perms'], ranks[1]['perms']))

    # Every rank's RNG states are in the checkpoint, and resuming from it ends where the uninterrupted run did.
    ckpt = tmp_path / 'step=3.ckpt'
    states = torch.load(ckpt, weights_only=True)['rng_states']
    assert len(states) == 2 and not torch.equal(states[0]['torch'], states[1]['torch'])
    _run(tmp_path, synthetic_root, str(ckpt))
    resumed = [json.loads((tmp_path / f'resumed_rank{r}.json').read_text()) for r in (0, 1)]
    assert [r['global_step'] for r in resumed] == [6, 6]
    for full, res in zip(ranks, resumed):
        assert res['perms'] == full['perms'][-len(res['perms']) :]
        assert (res['param_sum'], res['param_abs_sum']) == (full['param_sum'], full['param_abs_sum'])
        assert res['torch_draws'] == full['torch_draws']  # each rank resumed its own RNG state
