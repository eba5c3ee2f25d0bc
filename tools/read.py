#!/usr/bin/env python3
"""Read the text in images with a CLIP4STR checkpoint or its ONNX export (the original's ``read.py``, spec §8.3).

    python tools/read.py CKPT PATHS... [--format text|json|csv] [--batch_size 32] [--device auto|cpu|cuda]
                         [--refine_iters N] [--decode ar|nar] [--precision 32|bf16-mixed|16-mixed] [--threads N]
                         [--adapt] [--second_look [BELOW]] [--trust_checkpoint] [name:type=value ...]

PATHS are image files and folders (searched recursively). The default output is one line per image,
``name: text (confidence)``; ``--format json`` prints one JSON object ``{"results": [...], "errors": [...]}`` and
``--format csv`` a ``name,text,confidence,path`` table. In the text output and the messages on stderr, backslashes
and control characters (newline, tab, ...) in file names are written as Python escapes (``\\\\``, ``\\n``, ``\\t``,
``\\x1b``), so that each line is one image; JSON and CSV hold the names unchanged. Unreadable files, broken links and
folders reached a second time through links are reported on stderr and skipped; the exit code is 0 when at least one
image was read, 1 when none could be, 2 for usage and checkpoint errors.

Deliberate differences from the original: several paths, recursive folders, more image extensions (any case),
batched inference (``--batch_size 1`` for the original's one-image forwards, see its help), the confidence in the
output, CPU support (``--device auto`` is the default), EXIF orientation, transparency on white and 16-bit images
scaled to 8 bits (see ``strhub.read.to_rgb``). As in the original, the text is the raw prediction over the training
charset (case and punctuation kept) unless ``--adapt`` is given, and the model keeps the checkpoint's test charset.

``--second_look`` (ours, not the original's) reads the words read with a confidence under BELOW (0.9) again from
other views of their image (cut to the columns the word is in, padded, trimmed) and keeps the most confident reading:
loose crops and curved words gain most (:mod:`strhub.models.second_look`). PyTorch checkpoints only.

A ``.onnx`` CKPT (``tools/export.py SRC --output NAME.onnx``) runs on onnxruntime with the same results; its
decoding options were fixed at export and it runs in float32, so ``--refine_iters``, ``--decode``, ``--precision``
and model arguments are refused with it.
"""

import csv
import json
import math
import sys
from typing import List, Optional

from _cli import (
    MODEL_ARGS_HELP,
    ArgumentParser,
    CLIError,
    find_images,
    open_reader,
    model_overrides,
    parse_model_args,
    resolve_checkpoint,
    run_cli,
    split_paths_and_model_args,
)

PROG = 'read.py'


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description='Read the text in images with a CLIP4STR checkpoint.', epilog=MODEL_ARGS_HELP
    )
    parser.add_argument(
        'checkpoint',
        help='checkpoint file (.ckpt/.pt), ONNX export (.onnx), a training checkpoints/ directory, or a shipped '
        'model: clip4str-tiny',
    )
    parser.add_argument('paths', nargs='*', metavar='PATH', help='image files and folders (searched recursively)')
    # PARSeq's read.py takes --images FILES..., the original's --images_path FOLDER: both add to PATH.
    parser.add_argument('--images', nargs='+', default=[], metavar='PATH', help='more image files and folders')
    parser.add_argument('--images_path', nargs='+', default=[], metavar='PATH', help='the same as --images')
    parser.add_argument('--format', choices=('text', 'json', 'csv'), default='text', help='output format')
    parser.add_argument(
        '--batch_size',
        type=int,
        default=32,
        help='images per forward pass; 1 reproduces the original read.py exactly (the cross-modal branch decodes as '
        'many steps as the longest prediction of the batch, so confidences, rarely texts, depend on the batch)',
    )
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu, cuda or cuda:N')
    parser.add_decoding_options()
    parser.add_precision_option()
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help="CPU threads of PyTorch and onnxruntime (default: torch's); for one image at a time with a small model "
        '1 is often fastest',
    )
    parser.add_argument(
        '--adapt', action='store_true', help="map predictions onto the model's test charset (as evaluation does)"
    )
    parser.add_argument('--no_exif', action='store_true', help='ignore EXIF orientation tags')
    parser.add_second_look_option()
    parser.add_trust_option()
    return parser


def _escape(name: str) -> str:
    """``name`` on one line: backslash and control characters as Python-style escapes (reversible)."""
    return ''.join('\\\\' if c == '\\' else c if c.isprintable() or c == ' ' else repr(c)[1:-1] for c in name)


def _text_line(name: str, text: str, confidence: float) -> str:
    return f'{_escape(name)}: {text} ({confidence:.4f})'


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_items(argv)
    paths, model_args = split_paths_and_model_args(args.paths + unknown)
    paths += args.images + args.images_path
    if not paths:
        raise CLIError('no image paths given')
    if args.batch_size < 1:
        raise CLIError('--batch_size must be >= 1')
    if args.threads is not None and args.threads < 1:
        raise CLIError('--threads must be >= 1')
    kwargs = model_overrides(args.refine_iters, args.decode, parse_model_args(model_args))
    checkpoint = resolve_checkpoint(args.checkpoint)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # before the reader: its ONNX sessions take torch's count

    images, skipped = find_images(paths)
    if not images:
        for path, reason in skipped:
            print(f'skipped {_escape(path)}: {reason}', file=sys.stderr)
        raise CLIError('no image files found', exit_code=1)
    from strhub.models.second_look import SecondLookOptions

    second_look = None if args.second_look is None else SecondLookOptions(args.second_look)
    reader = open_reader(
        checkpoint,
        args.trust_checkpoint,
        kwargs,
        device=args.device,
        batch_size=args.batch_size,
        adapt_charset=args.adapt,
        exif=not args.no_exif,
        precision=args.precision,
        second_look=second_look,
    )

    from tqdm import tqdm

    for path, reason in skipped:
        print(f'skipped {_escape(path)}: {reason}', file=sys.stderr)

    # Shown on stderr for inputs larger than one batch (tqdm hides it when stderr is not a terminal).
    progress = tqdm(
        total=len(images), unit='img', file=sys.stderr, disable=None if len(images) > args.batch_size else True
    )
    results, errors = [], []
    writer = csv.writer(sys.stdout, lineterminator='\n') if args.format == 'csv' else None
    if writer is not None:
        writer.writerow(['name', 'text', 'confidence', 'path'])
    for batch in reader.read_batches(path for _, path in images):
        for i, r in batch:
            name, path = images[i]
            if isinstance(r, Exception):
                errors.append({'name': name, 'path': str(path), 'error': str(r)})
                progress.write(f'skipped {_escape(str(r))}', file=sys.stderr)
                continue
            results.append({'name': name, 'path': str(path), 'text': r.text, 'confidence': r.confidence})
            if args.format == 'text':
                progress.write(_text_line(name, r.text, r.confidence), file=sys.stdout)
            elif writer is not None:
                writer.writerow([name, r.text, repr(r.confidence), str(path)])
        sys.stdout.flush()
        progress.update(len(batch))
    progress.close()
    if args.format == 'json':
        for r in results:  # JSON has no NaN/inf; cannot happen for probabilities, but keep the output valid
            if not math.isfinite(r['confidence']):
                r['confidence'] = None
        json.dump({'results': results, 'errors': errors}, sys.stdout, indent=2, ensure_ascii=False)
        print()
    n_bad = len(errors) + len(skipped)
    print(f'read {len(results)} image(s)' + (f', skipped {n_bad}' if n_bad else ''), file=sys.stderr)
    return 0 if results else 1


if __name__ == '__main__':
    run_cli(main, prog=PROG)
