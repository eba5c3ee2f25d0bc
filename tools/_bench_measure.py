"""The measurements of ``tools/bench.py``: a model of an experiment config with random weights, timed stage by stage,
for inference per decode mode and for the training step, with the original's computation beside ours."""

import platform
import resource
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List
from unittest import mock

from _cli import CLIError

from strhub.device import cpu_fields

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
