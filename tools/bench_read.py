#!/usr/bin/env python3
"""How fast images are read, file to text (a benchmark, not a test): the latency of one image at a time and the
throughput in batches, for checkpoints and ONNX exports, beside rapidocr's text recogniser on the same files.

    python tools/bench_read.py clip4str-tiny tiny.onnx
    python tools/bench_read.py clip4str-tiny tiny.onnx --rapidocr /opt/rapidocr/bin/python --out read_bench.json
    python tools/bench_read.py clip4str-tiny --second_look --sets SynthScene/mixed SynthScene/loose

The images are ``--count`` held-out words of the built-in synthetic test sets (SynthWords and SynthFonts, written to
a temporary folder as the JPEG/PNG files a user would have; ``--sets`` renders others, e.g. the scene-like
``SynthScene/mixed``), so each reader's word accuracy (case-insensitive alphanumerics) stands beside its speed; ``--images DIR`` times your own files instead. Latency is timed per image
from the path to the text (file read and decoded, resized, normalised, the model, the string) after ``--warmup``
untimed images, as the median and the 90th percentile; throughput reads all images ``--batch_size`` at a time after
one untimed batch. ``--second_look`` times each PyTorch checkpoint again with a second look (a row of its own:
``tools/read.py --second_look``), whose cost falls on the images read with low confidence. ``--threads`` applies to PyTorch, to our ONNX sessions and to rapidocr's.

``--rapidocr PYTHON`` names an interpreter that has rapidocr (a virtual environment of its own: its pins of
onnxruntime and numpy need not match ours); its recogniser alone runs there (no detection, no angle classifier), one
image per call as its API reads a text line, so its throughput is that of one image at a time.
"""

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from _bench_measure import cpu_info
from _cli import ArgumentParser, CLIError, find_images, run_cli
from _rapidocr import run_rapidocr

PNG_SIGNATURE = b'\x89PNG'


def write_heldout_words(folder: Path, count: int, seed: int, sets: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """``count`` held-out test words (of the test splits ``sets``, by default SynthWords and SynthFonts) as image
    files in ``folder``: {path: label}."""
    from strhub.data.synthetic import TEST_SETS, heldout_samples

    labels = {}
    for i, (data, label) in enumerate(heldout_samples(count, seed, sets=sets or TEST_SETS)):
        path = folder / f'{i:05d}.{"png" if data.startswith(PNG_SIGNATURE) else "jpg"}'
        path.write_bytes(data)
        labels[str(path)] = label
    return labels


def latency_summary(times: Sequence[float]) -> Dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    p90 = statistics.quantiles(ms, n=10)[-1] if len(ms) > 1 else ms[0]
    return {'median_ms': statistics.median(ms), 'p90_ms': p90, 'mean_ms': statistics.fmean(ms)}


def bench_ours(model: str, paths: List[str], args, second_look: bool = False) -> Dict[str, Any]:
    from strhub.read import TextReader

    reader = TextReader(
        model,
        device=args.device,
        batch_size=1,
        adapt_charset=True,
        trust=args.trust_checkpoint,
        second_look=second_look,
    )
    for path in paths[: args.warmup]:
        reader.read(path)
    texts, times = [], []
    for path in paths:
        start = time.perf_counter()
        texts.append(reader.read(path)[0].text)
        times.append(time.perf_counter() - start)
    reader.batch_size = args.batch_size
    reader.read(paths[: args.batch_size])
    start = time.perf_counter()
    reader.read(paths)
    elapsed = time.perf_counter() - start
    backend = 'onnxruntime' if reader.onnx is not None else 'PyTorch'
    return {
        'reader': f'{model} + second look' if second_look else model,
        'backend': backend,
        'texts': texts,
        **latency_summary(times),
        'images_s': len(paths) / elapsed,
    }


def bench_rapidocr(python: str, paths: List[str], threads: int, args) -> Dict[str, Any]:
    result = run_rapidocr(python, paths, threads, args.warmup)
    return {
        'reader': 'rapidocr recogniser',
        'backend': result['version'],
        'texts': result['texts'],
        **latency_summary(result['times']),
        'images_s': len(paths) / sum(result['times']),
    }


def report(results: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    cpu = meta['cpu']
    lines = [
        f'{meta["images"]} images ({meta["source"]}), {meta["device"]} ({cpu["model"]}; flags: '
        f'{" ".join(cpu["flags"]) or "none of avx2/avx512/amx"}), torch {meta["torch"]}',
        '',
        f'| reader | backend | threads | latency median ms | p90 ms | images/s at batch {meta["batch_size"]} | '
        'word accuracy |',
        '|---|---|---|---|---|---|---|',
    ]
    for r in results:
        accuracy = f'{100 * r["accuracy"]:.1f}%' if r.get('accuracy') is not None else '-'
        lines.append(
            f'| {r["reader"]} | {r["backend"]} | {r["threads"]} | {r["median_ms"]:.2f} | {r["p90_ms"]:.2f} | {r["images_s"]:.1f} | '
            f'{accuracy} |'
        )
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('models', nargs='*', help='checkpoints, ONNX exports (.onnx) or shipped model names')
    parser.add_argument('--rapidocr', metavar='PYTHON', help='an interpreter with rapidocr installed, to time beside')
    parser.add_argument('--images', metavar='DIR', help='time these image files (default: rendered held-out words)')
    parser.add_argument('--count', type=int, default=200, help='rendered words (without --images)')
    parser.add_argument('--seed', type=int, default=4321, help='seed of the rendered words')
    parser.add_argument(
        '--sets', nargs='+', default=None, help='test splits to render (default: SynthWords SynthFonts)'
    )
    parser.add_argument(
        '--second_look', action='store_true', help='also time each PyTorch checkpoint reading with a second look'
    )
    parser.add_argument('--warmup', type=int, default=10, help='untimed images before the latency is timed')
    parser.add_argument('--batch_size', type=int, default=64, help='images per forward pass of the throughput run')
    parser.add_argument(
        '--threads', type=int, nargs='+', default=None, help="CPU threads, each count timed in turn (default: torch's)"
    )
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:N or auto')
    parser.add_argument('--out', default=None, help='also write the results as JSON to this file')
    parser.add_trust_option()
    args = parser.parse_args(argv)
    if not args.models and not args.rapidocr:
        raise CLIError('nothing to time: give models and/or --rapidocr PYTHON')
    if args.count < 1 or args.batch_size < 1 or args.warmup < 0:
        raise CLIError('--count and --batch_size must be >= 1, --warmup >= 0')

    import torch

    from strhub.data.utils import CHARSETS, CharsetAdapter

    thread_counts = args.threads or [torch.get_num_threads()]
    if min(thread_counts) < 1:
        raise CLIError('--threads must be >= 1')
    with tempfile.TemporaryDirectory(prefix='bench_read_') as tmp:
        if args.images:
            paths = [str(p) for _, p in find_images([args.images])[0]]
            if not paths:
                raise CLIError(f'--images {args.images}: no image files')
            labels: Dict[str, str] = {}
            source = args.images
        else:
            print(f'rendering {args.count} held-out words', flush=True)
            try:
                labels = write_heldout_words(Path(tmp), args.count, args.seed, args.sets)
            except ValueError as e:  # an unknown test split
                raise CLIError(f'--sets: {e}') from None
            paths = list(labels)
            source = (
                f'held-out synthetic words of {" ".join(args.sets or ["SynthWords", "SynthFonts"])}, seed {args.seed}'
            )
        results = []
        for threads in thread_counts:
            torch.set_num_threads(threads)  # before each reader is built: its ONNX sessions take torch's count
            for model in args.models:
                print(f'timing {model}, {threads} threads', flush=True)
                results.append({'threads': threads, **bench_ours(model, paths, args)})
                if args.second_look and not model.lower().endswith('.onnx'):
                    print(f'timing {model} with a second look, {threads} threads', flush=True)
                    results.append({'threads': threads, **bench_ours(model, paths, args, second_look=True)})
            if args.rapidocr:
                print(f'timing rapidocr, {threads} threads', flush=True)
                results.append({'threads': threads, **bench_rapidocr(args.rapidocr, paths, threads, args)})
    adapt = CharsetAdapter(CHARSETS['36_lowercase'])
    for r in results:
        r['accuracy'] = (
            statistics.fmean(adapt(t) == adapt(labels[p]) for t, p in zip(r['texts'], paths)) if labels else None
        )
    meta = {
        'images': len(paths),
        'source': source,
        'device': args.device,
        'cpu': cpu_info(),
        'batch_size': args.batch_size,
        'warmup': args.warmup,
        'torch': torch.__version__,
    }
    print()
    print(report(results, meta))
    if args.out:
        Path(args.out).write_text(json.dumps({**meta, 'results': results}, indent=2) + '\n')
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    run_cli(main, prog='bench_read.py')
