"""The tables ``tools/bench.py`` prints from its results (the JSON it writes with ``--out``)."""

from typing import Any, Dict

from _bench_measure import MODES


def report(result: Dict[str, Any]) -> str:
    """The tables on screen."""
    n, inf = result['batch_size'], result.get('inference')
    p = result['params']
    lines = [
        f'{result["experiment"]}, batch {n}, {result["device"]} ({result["cpu"]["model"]}; '
        f'flags: {" ".join(result["cpu"]["flags"]) or "none of avx2/avx512/amx"}), {result["threads"]} threads, '
        f'precision {result["precision"]}, torch {result["torch"]}',
        f'parameters: {p["total"] / 1e6:.2f}M ({p["trainable"] / 1e6:.2f}M trainable, {p["frozen"] / 1e6:.2f}M frozen)',
    ]
    if inf:
        enc = inf['encoder']
        lines += [
            '',
            f'image encoder alone: {enc["median"]:.4f} s ({n / enc["median"]:.1f} images/s, '
            f'{enc["gflops"]:.3f} GFLOPs/image)',
            '',
            '| decoding | steps | images/s | median s (min-max) | x encoder | GFLOPs/image | reference s | x encoder | '
            'GFLOPs/image | speed-up |',
            '|---|---|---|---|---|---|---|---|---|---|',
        ]
        for c in inf['cases']:
            o = c['ours']
            row = (
                f'| {MODES[c["mode"]]} | {c["steps"]} | {n / o["median"]:.1f} | {o["median"]:.4f} '
                f'({o["min"]:.4f}-{o["max"]:.4f}) | {o["median"] / enc["median"]:.3f} | {o["gflops"]:.3f} |'
            )
            if 'reference' in c:
                r = c['reference']
                row += (
                    f' {r["median"]:.4f} | {r["median"] / enc["median"]:.3f} | {r["gflops"]:.3f} | '
                    f'{r["median"] / o["median"]:.2f}x |'
                )
            else:
                row += ' - | - | - | - |'
            lines.append(row)
        total = sum(inf['stages'].values())
        shares = ', '.join(f'{k} {100 * v / total:.1f}%' for k, v in inf['stages'].items())
        lines += ['', f'where the time goes (AR + 1 refinement, stages timed one by one): {shares}']
    train = result.get('training')
    if train:
        o = train['ours']
        lines += [
            '',
            f'training step (labels of {train["label_length"]} characters, {train["perms"]} permutations, captions: '
            f'{train.get("captions", "predicted")}):',
            '| computation | images/s | median s (min-max) | forward | backward | optimizer |',
            '|---|---|---|---|---|---|',
        ]
        for kind in ('ours', 'reference'):
            if kind in train:
                t = train[kind]
                lines.append(
                    f'| {kind} | {n / t["median"]:.1f} | {t["median"]:.4f} ({t["min"]:.4f}-{t["max"]:.4f}) | '
                    f'{t["forward"]:.4f} | {t["backward"]:.4f} | {t["optimizer"]:.4f} |'
                )
        if 'reference' in train:
            lines.append(f'speed-up of the training step: {train["reference"]["median"] / o["median"]:.2f}x')
    lines.append('')
    lines.append('peak memory: ' + ', '.join(f'{k} {v:.0f} MiB' for k, v in result['peak_memory_mib'].items()))
    return '\n'.join(lines)
