#!/usr/bin/env python3
"""How fast CLIP4STR runs (a benchmark, not a test): an experiment config with random weights, on this machine.

    python tools/bench.py --experiment clip4str-b16 --batch_size 16 --reference
    python tools/bench.py --experiment clip4str-tiny --precision bf16-mixed --out bench.json

Every figure is measured in the same run: inference per decode mode (AR + refinement, AR, NAR + refinement) for
words that end at every length given (``--lengths``: decoding exactly length + 1 steps, no early stop), each as a
ratio to the image encoder alone; where the time goes (image encoder, visual decoder, text encoder, cross-modal
decoder, refinement); the training step (forward, backward, optimizer); peak memory; parameters and GFLOPs per
image. ``--reference`` also times the original's computation (``strhub.models.clip4str.reference``, the same
outputs) so that every speed-up is a ratio within one run. Warm-up runs are excluded; the median of ``--repeats`` runs
is reported with its spread (min-max). The CPU model and its vector flags are printed: compare figures from one run,
or state the machine with them.
"""

import json
import platform
import resource
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from unittest import mock

from _cli import ArgumentParser, CLIError, run_cli

from strhub.device import PRECISIONS, cpu_fields, native_bf16, select_device
from strhub.device import autocast as precision_autocast

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
MODES = {'ar_refine': 'AR + refine', 'ar': 'AR', 'nar': 'NAR + refine'}


def cpu_info() -> Dict[str, Any]:
    """The CPU model and the flags that decide float32/bf16 speed (Linux; elsewhere what ``platform`` knows)."""
    fields = cpu_fields()
    flags = set(fields.get('flags', '').split())
    wanted = ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_bf16', 'amx_tile')
    return {
        'model': fields.get('model name') or platform.processor() or platform.machine(),
        'flags': [f for f in wanted if f in flags],
    }


def build_system(experiment: str, overrides: List[str]):
    """The experiment's ``CLIP4STRSystem`` with a random CLIP of the configured shape."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    import strhub.data.charsets  # noqa: F401 (registers the ${charset:NAME} resolver the configs use)

    if not (CONFIGS / 'experiment' / f'{experiment}.yaml').is_file():
        names = sorted(p.stem for p in (CONFIGS / 'experiment').glob('*.yaml'))
        raise CLIError(f'unknown experiment {experiment!r} (one of: {", ".join(names)})')
    try:
        with initialize_config_dir(str(CONFIGS), version_base=None):
            config = compose('main', [f'+experiment={experiment}', 'model.clip_pretrained=null', *overrides])
    except HydraException as e:
        raise CLIError(f'config: {e}') from None
    return instantiate(config.model)


class Timer:
    """Median and spread of ``repeats`` timed calls after ``warmup`` untimed ones (synchronising CUDA)."""

    def __init__(self, device, warmup: int, repeats: int):
        import torch

        self.sync = torch.cuda.synchronize if device.type == 'cuda' else lambda: None
        self.warmup, self.repeats = warmup, repeats

    def __call__(self, fn: Callable[[], Any]) -> Dict[str, float]:
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeats):
            self.sync()
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return {'median': statistics.median(times), 'min': min(times), 'max': max(times)}


def peak_memory_mib(device) -> float:
    """CUDA: the most allocated since the last reset; CPU: the process's peak resident set so far (Linux: KiB)."""
    import torch

    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gflops(fn: Callable[[], Any], batch: int) -> float:
    """GFLOPs per image of ``fn`` (matrix products and convolutions, as ``FlopCounterMode`` counts them)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # Its module tracker needs autograd on (it fails in inference mode and under no_grad): one image, graph dropped.
    with torch.inference_mode(False), torch.enable_grad(), counter:
        fn()
    return counter.get_total_flops() / batch / 1e9


def random_labels(n: int, length: int, charset: str, seed: int) -> List[str]:
    import random

    rng = random.Random(seed)
    return [''.join(rng.choice(charset) for _ in range(length)) for _ in range(n)]


def bench_inference(system, images, args, timer, autocast) -> Dict[str, Any]:
    import torch

    from strhub.models.clip4str import reference

    model = system.model
    out: Dict[str, Any] = {}
    with torch.inference_mode(), autocast():
        out['encoder'] = timer(lambda: model.encode(images))
        out['encoder']['gflops'] = gflops(lambda: model.encode(images[:1]), 1)
        cases = []
        for mode in args.modes:
            model.decode_ar = mode != 'nar'
            model.refine_iters = 0 if mode == 'ar' else args.refine_iters
            for length in args.lengths:
                case: Dict[str, Any] = {'mode': mode, 'length': length, 'steps': length + 1}
                case['ours'] = timer(lambda: model.forward_branches(images, length))
                case['ours']['gflops'] = gflops(lambda: model.forward_branches(images[:1], length), 1)
                if args.reference:
                    case['reference'] = timer(lambda: reference.forward_branches(model, images, length))
                    case['reference']['gflops'] = gflops(
                        lambda: reference.forward_branches(model, images[:1], length), 1
                    )
                cases.append(case)
                print(f'  {MODES[mode]}, {length + 1} steps: {case["ours"]["median"]:.3f} s', flush=True)
        out['cases'] = cases
        out['stages'] = stage_times(model, images, args, timer)
    return out


def stage_times(model, images, args, timer) -> Dict[str, float]:
    """Median seconds of each stage of AR decoding with one refinement at the longest length."""
    num_steps = max(args.lengths) + 1
    model.decode_ar, model.refine_iters = True, 1
    memory = model.encode(images)
    visual_kv = model.visual_decoder.memory_kv(memory)
    visual = model.decode(model.visual_decoder, visual_kv, num_steps, False)
    stages = {
        'image encoder': timer(lambda: model.encode(images))['median'],
        'visual decoder': timer(
            lambda: model.decode(model.visual_decoder, model.visual_decoder.memory_kv(memory), num_steps, False)
        )['median'],
    }
    if model.cross_decoder is None:
        stages['refinement'] = timer(lambda: model.refine(model.visual_decoder, visual, visual_kv, num_steps))['median']
        return stages
    tokens = model.caption_tokens(visual)
    stages['caption + text encoder'] = timer(lambda: model.encode_caption(model.caption_tokens(visual)))['median']
    cross_memory = model.cross_memory(memory, tokens)
    cross_kv = model.cross_decoder.memory_kv(cross_memory)
    cross = model.decode(model.cross_decoder, cross_kv, num_steps, False)
    stages['cross-modal decoder'] = timer(lambda: model.decode_cross(cross_memory, num_steps))['median']
    stages['refinement (both)'] = timer(
        lambda: (
            model.refine(model.visual_decoder, visual, visual_kv, num_steps),
            model.refine(model.cross_decoder, cross, cross_kv, num_steps),
        )
    )['median']
    return stages


def bench_training(system, images, args, timer, autocast, device) -> Dict[str, Any]:
    """Forward, backward and optimizer step of one training batch (fused AdamW, as training uses on CPU and CUDA)."""
    import numpy as np
    import torch

    from strhub.models.clip4str import reference
    from strhub.models.parseq import gen_tgt_perms

    hp = system.hparams
    labels = random_labels(len(images), args.train_label_length, system.tokenizer.charset, seed=0)
    perms = gen_tgt_perms(
        args.train_label_length, hp.perm_num, hp.perm_forward, hp.perm_mirrored, np.random.default_rng(0)
    )
    params = [p for p in system.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6, fused=device.type in ('cpu', 'cuda'))
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == '16-mixed')
    system.train()
    out: Dict[str, Any] = {
        'label_length': args.train_label_length,
        'perms': len(perms),
        'captions': args.train_captions,
    }
    if args.train_captions == 'labels':
        # A model that reads: every permutation's teacher-forced prediction, hence its caption, is the label. With
        # random weights ('predicted') all P x N captions differ, the worst case for the text encoder.
        captions = [system.charset_adapter(y) for y in labels]
        patch = mock.patch.object(system.model, 'captions', lambda logits: captions * (len(logits) // len(captions)))
    else:
        patch = nullcontext()
    kinds = {'ours': system.training_loss, 'reference': lambda *a: reference.training_loss(system, *a)}
    for kind in ['ours', 'reference'] if args.reference else ['ours']:
        loss_fn = kinds[kind]
        parts: Dict[str, List[float]] = {'forward': [], 'backward': [], 'optimizer': []}

        def step(record: bool) -> None:
            marks = [time.perf_counter()]
            with autocast():
                loss = loss_fn(images, labels, perms)
            timer.sync()
            marks.append(time.perf_counter())
            scaler.scale(loss).backward()
            timer.sync()
            marks.append(time.perf_counter())
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            timer.sync()
            marks.append(time.perf_counter())
            if record:
                for name, a, b in zip(parts, marks, marks[1:]):
                    parts[name].append(b - a)

        with patch:
            for i in range(args.warmup + args.repeats):
                step(record=i >= args.warmup)
        total = [sum(t) for t in zip(*parts.values())]
        out[kind] = {'median': statistics.median(total), 'min': min(total), 'max': max(total)}
        out[kind].update({name: statistics.median(t) for name, t in parts.items()})
        print(f'  training step ({kind}): {out[kind]["median"]:.3f} s', flush=True)
    system.eval()
    return out


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


def main(argv: Optional[List[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('overrides', nargs='*', help='Hydra overrides of the model, e.g. model.dec_depth=2')
    parser.add_argument('--experiment', default='clip4str-tiny', help='configs/experiment/NAME.yaml')
    parser.add_argument('--batch_size', type=int, default=16, help='images per batch')
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:N or auto')
    parser.add_argument('--precision', choices=PRECISIONS, default='32', help='float32 or mixed precision (autocast)')
    parser.add_argument('--threads', type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument('--modes', nargs='+', choices=list(MODES), default=list(MODES), help='decode modes to time')
    parser.add_argument(
        '--lengths',
        nargs='+',
        type=int,
        default=None,
        help='word lengths to decode (length + 1 steps each; default: the max label length and 7)',
    )
    parser.add_argument('--refine_iters', type=int, default=1, help='refinement iterations of the refine modes')
    parser.add_argument('--reference', action='store_true', help="also time the original's computation")
    parser.add_argument('--no_inference', action='store_true', help='skip the inference timings')
    parser.add_argument('--no_train', action='store_true', help='skip the training step')
    parser.add_argument('--train_label_length', type=int, default=10, help='label length of the training batch')
    parser.add_argument(
        '--train_captions',
        choices=('labels', 'predicted'),
        default='labels',
        help="captions of the training step's cross-modal branch: the labels (as from a model that reads) or the "
        "random weights' predictions (all different: the worst case)",
    )
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs before timing')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs (median and min-max reported)')
    parser.add_argument('--out', default=None, help='also write the results as JSON to this file')
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        raise CLIError('--batch_size and --repeats must be >= 1, --warmup >= 0')

    import torch

    device = select_device(args.device)
    precision_autocast(device, args.precision)  # a precision this device cannot run fails now, not after the build
    if args.threads:
        torch.set_num_threads(args.threads)

    def autocast():
        return precision_autocast(device, args.precision)

    system = build_system(args.experiment, args.overrides).to(device).eval()
    hp = system.hparams
    max_len = hp.max_label_length
    args.lengths = args.lengths or sorted({max_len, min(7, max_len)}, reverse=True)
    if not all(1 <= n <= max_len for n in args.lengths):
        raise CLIError(f'--lengths must be between 1 and the max label length {max_len}')
    if not 1 <= args.train_label_length <= max_len:
        raise CLIError(f'--train_label_length must be between 1 and the max label length {max_len}')
    params = list(system.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    cpu = cpu_info()
    result: Dict[str, Any] = {
        'experiment': args.experiment,
        'overrides': args.overrides,
        'batch_size': args.batch_size,
        'img_size': list(hp.img_size),
        'device': str(device),
        'cpu': cpu,
        'gpu': torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
        'threads': torch.get_num_threads(),
        'precision': args.precision,
        'native_bf16': native_bf16(device),
        'torch': torch.__version__,
        'warmup': args.warmup,
        'repeats': args.repeats,
        'params': {'total': total, 'trainable': trainable, 'frozen': total - trainable},
        'peak_memory_mib': {},
    }
    if args.precision == 'bf16-mixed' and not result['native_bf16']:
        print('note: this device has no native bf16 (no AVX512-BF16/AMX): bf16 runs emulated, float32 is faster')
    images = torch.rand(args.batch_size, 3, *hp.img_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = images.to(device)
    timer = Timer(device, args.warmup, args.repeats)
    print(f'{args.experiment}: {total / 1e6:.2f}M parameters, batch {args.batch_size}, {device}', flush=True)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    if not args.no_inference:
        result['inference'] = bench_inference(system, images, args, timer, autocast)
        result['peak_memory_mib']['inference'] = peak_memory_mib(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    if not args.no_train:
        result['training'] = bench_training(system, images, args, timer, autocast, device)
        result['peak_memory_mib']['training'] = peak_memory_mib(device)
    print()
    print(report(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + '\n')
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    run_cli(main, prog='bench.py')
