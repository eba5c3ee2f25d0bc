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
from pathlib import Path
from typing import Any, Dict, List, Optional

from _bench_measure import MODES, Timer, bench_inference, bench_training, build_system, cpu_info, peak_memory_mib
from _bench_report import report
from _cli import ArgumentParser, CLIError, run_cli

from strhub.device import PRECISIONS, native_bf16, select_device
from strhub.device import autocast as precision_autocast


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
