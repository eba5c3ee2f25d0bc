"""Two-process DDP on CPU (gloo) with gradient accumulation: learning-rate scaling and rank synchrony."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_two_process_ddp_with_accumulation(tmp_path, synthetic_root):
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tests' / 'ddp_check.py'), str(tmp_path), str(synthetic_root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1)]
    # max_steps counts optimizer steps (6 // 2 devices = 3, as the original divides it by the GPU count).
    assert [r['world_size'] for r in ranks] == [2, 2] and [r['global_step'] for r in ranks] == [3, 3]
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
