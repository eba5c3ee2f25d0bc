#!/usr/bin/env python3
"""Export a checkpoint (ours, a released one, or a shipped model by name) for inference.

    python tools/export.py SRC DST.ckpt [--fp32] [--trust_checkpoint]
    python tools/export.py SRC --output NAME.onnx [--refine_iters N] [--decode ar|nar] [name:type=value ...]

--format ckpt (the default for a .ckpt output): an inference-only copy, float16 weights (--fp32: float32) and
hyper-parameters, without optimizer and loop state (a fraction of the size; not resumable).

--format onnx (the default for a .onnx output): the model for onnxruntime, with a dynamic batch size, as NAME.onnx
and, for a model with the language model, NAME.cross.onnx beside it (keep the two together); read it with
``tools/read.py NAME.onnx IMAGES...`` or ``strhub.TextReader('NAME.onnx')``. The decoding options (--refine_iters,
--decode, model arguments such as charset_test:str=...) are fixed in the export. Needs onnx: pip install -e '.[onnx]'.

Outputs are replaced atomically. Example (how the shipped model was made):

    python tools/export.py runs/tiny/checkpoints/last.ckpt strhub/pretrained/clip4str_tiny.ckpt
"""

import time
from pathlib import Path
from typing import List, Optional

from _cli import (
    MODEL_ARGS_HELP,
    ArgumentParser,
    CLIError,
    check_writable,
    load_model,
    model_overrides,
    parse_model_args,
    run_cli,
    split_paths_and_model_args,
)

from strhub.deploy.onnx_format import DEFAULT_OPSET, MAX_OPSET, require

PROG = 'export.py'
FORMATS = {'.ckpt': 'ckpt', '.onnx': 'onnx'}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__, epilog=f'{MODEL_ARGS_HELP} (--format onnx)')
    parser.add_argument('src', help='checkpoint to export (ours, a released one, or a shipped model by name)')
    parser.add_argument('dst', nargs='?', metavar='DST', help='file to write (or --output)')
    parser.add_argument('--output', metavar='FILE', help='file to write (or DST)')
    parser.add_argument(
        '--format', choices=sorted(set(FORMATS.values())), help='what to write (default: from the suffix of the file)'
    )
    parser.add_argument('--fp32', action='store_true', help='ckpt: keep float32 weights (default: float16)')
    parser.add_decoding_options('onnx: ', 'SRC')
    parser.add_argument(
        '--opset',
        type=int,
        default=None,
        help=f'onnx: ONNX opset, {DEFAULT_OPSET} to {MAX_OPSET} (default: {DEFAULT_OPSET})',
    )
    parser.add_trust_option()
    return parser


def _size(path: Path) -> str:
    return f'{path} ({path.stat().st_size / 2**20:.1f} MiB)'


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_items(argv)
    paths, model_args = split_paths_and_model_args(([args.dst] if args.dst else []) + unknown)
    if len(paths) > 1:
        parser.error(f'unrecognized arguments: {" ".join(paths[1:])}')
    if paths and args.output:
        raise CLIError(f'two output files ({paths[0]} and --output {args.output}): give DST or --output')
    if not paths and not args.output:
        raise CLIError('no output file: give DST or --output FILE')
    dst = Path(paths[0] if paths else args.output)
    fmt = args.format or FORMATS.get(dst.suffix.lower())
    if fmt is None:
        raise CLIError(f'cannot tell the format from {dst}: name it .ckpt or .onnx, or give --format ckpt|onnx')
    kwargs = model_overrides(args.refine_iters, args.decode, parse_model_args(model_args))
    if fmt == 'ckpt':
        if kwargs or args.opset is not None:
            raise CLIError(
                'model options and --opset are for --format onnx: a checkpoint keeps its hyper-parameters '
                '(override them where it is loaded, e.g. tools/read.py CKPT IMAGES refine_iters:int=0)'
            )
    elif args.fp32:
        raise CLIError('--fp32 is for --format ckpt (ONNX exports are float32)')
    elif dst.suffix.lower() != '.onnx':
        raise CLIError(f'an ONNX export is named NAME.onnx (its cross-modal graph NAME.cross.onnx), got {dst}')
    elif args.opset is not None and not DEFAULT_OPSET <= args.opset <= MAX_OPSET:
        raise CLIError(f'--opset must be {DEFAULT_OPSET} to {MAX_OPSET} (got {args.opset})')
    check_writable(dst, f'cannot write {dst}')

    if fmt == 'ckpt':
        from strhub.models.checkpoint import export_checkpoint

        out = export_checkpoint(args.src, dst, half=not args.fp32, trust=args.trust_checkpoint)
        print(f'wrote {_size(out)}')
        return 0

    from strhub.deploy.onnx_export import export_onnx

    try:
        require('onnx', 'ONNX export')
    except ImportError as e:
        raise CLIError(str(e)) from None
    system = load_model(args.src, trust=args.trust_checkpoint, **kwargs)
    start = time.perf_counter()
    try:
        written = export_onnx(system, dst, opset=args.opset or DEFAULT_OPSET)
    except OSError as e:
        raise CLIError(f'cannot write {dst}: {e.strerror or e}') from None
    print(f'wrote {", ".join(map(_size, written))} in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    run_cli(main, prog=PROG)
