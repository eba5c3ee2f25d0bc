#!/usr/bin/env python3
"""Evaluate a CLIP4STR checkpoint on the scene-text benchmarks (the original's ``test.py``, spec §8.1).

    python tools/test.py CKPT --data_root DIR [--new] [--std] [--cased] [--punctuation] [--rotation D]
                         [--batch_size 512] [--num_workers 4] [--device auto|cpu|cuda] [--precision 32|bf16-mixed]
                         [--refine_iters N] [--decode ar|nar] [--openai_meanstd] [--out results.json] [--out results.csv]
                         [--trust_checkpoint] [--clip_refine [--sample_K 5] [--sample_K2 5] [--sample_total 50]
                         [--sample_prompt TEXT] [--alpha 0.1] [--sample_seed 0]] [--second_look [BELOW]]
                         [name:type=value ...]

Test sets are LMDBs under ``DIR/test/<name>``: the standard benchmark (IIIT5k, SVT, IC13_1015, IC15_1811,
IC15_2077, SVTP, CUTE80, HOST, WOST), with ``--new`` also ArT, COCOv1.4 and Uber, and every other LMDB directory
under ``DIR/test`` (e.g. IC13_857, or the built-in synthetic SynthWords/SynthFonts), reported in an "Other" group.
Metrics, tables and the ``<checkpoint>.log_new{True|False}.txt`` file follow the original; the same numbers go to
``--out`` files (``.json`` or ``.csv``, the option may be repeated), each checked writable before anything is loaded.

Every image is decoded before its set is evaluated: a record whose image (or label) is missing or unreadable is
excluded, neither counted in ``# samples`` nor scored, and listed with its key and reason under the table, in the
log and in the ``--out`` files (``num_skipped``, and ``skipped_records`` in JSON).

``--clip_refine`` is the original's optional post-processing (spec §8.5, not used for the paper's results): each
prediction is replaced by the best of readings drawn from its per-character distributions, scored with the model's
own CLIP (:mod:`strhub.models.clip4str.clip_refine`). The log is then named as the original names it,
``<checkpoint>.log_K{K2}-{K}-{total}_prompt{prompt}_alpha{alpha}_new{True|False}.txt``.

``--second_look`` is ours, not the original's: words read with a confidence under BELOW (0.9) are read again from
other views of their image and the most confident reading is kept (:mod:`strhub.models.second_look`). The log is then
named ``<checkpoint>.log_second_look{BELOW}_new{True|False}.txt``.

Deliberate differences from the original: runs on CPU (``--device auto`` is the default, no unconditional
``torch.cuda.synchronize()``); a missing standard set is skipped with a note instead of crashing; extra LMDBs are
evaluated as an "Other" group (``--std`` turns that off); the "Benchmark (Subset)" table, identical to "Benchmark" in
CLIP4STR (spec §10.16), is printed once; a set left empty by the label filter shows ``nan`` instead of dividing by
zero; unreadable records are excluded and reported instead of crashing; ``--openai_meanstd`` normalises with the CLIP
statistics (the original, and the default here, use 0.5/0.5); ``--clip_refine`` works on CLIP4STR checkpoints (the
original's raises there, see :mod:`strhub.models.clip4str.clip_refine`), its draws are seeded (``--sample_seed``), and
there is no ``--clip_model_path``: the original only reads it for models without a CLIP of their own.
"""

import dataclasses
import math
import sys
from pathlib import Path
from typing import List, Optional

from _cli import (
    MODEL_ARGS_HELP,
    ArgumentParser,
    CLIError,
    charset_arg,
    load_model,
    model_overrides,
    parse_model_args,
    resolve_checkpoint,
    run_cli,
)
from _results import find_test_root, results_outputs, write_results
from strhub.data.charsets import benchmark_charset
from strhub.pretrained import pretrained_path

PROG = 'test.py'


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description='Evaluate a CLIP4STR checkpoint on the scene-text test sets.', epilog=MODEL_ARGS_HELP
    )
    parser.add_argument(
        'checkpoint',
        help='checkpoint file, a directory (best *val_accuracy=* file, else last.ckpt)'
        ' or a shipped model: clip4str-tiny',
    )
    parser.add_argument('--data_root', default='data', help='dataset root holding test/<name>/data.mdb')
    parser.add_argument('--batch_size', type=int, default=512, help='images per forward pass')
    parser.add_argument('--num_workers', type=int, default=4, help='DataLoader worker processes (0: load in this one)')
    parser.add_argument('--cased', action='store_true', help='case-sensitive: add upper case to the test charset')
    parser.add_argument('--punctuation', action='store_true', help='add punctuation to the test charset')
    parser.add_argument(
        '--charset_test',
        metavar='CHARSET',
        help="score on this charset instead of the benchmark's (--cased/--punctuation are then ignored): 'train' (the "
        "checkpoint's training charset, for models fine-tuned on other scripts), a charset name or file, or the "
        'characters',
    )
    parser.add_argument('--new', action='store_true', help='also evaluate the new benchmarks (ArT, COCOv1.4, Uber)')
    parser.add_argument(
        '--std', action='store_true', help='only the benchmark sets (and New with --new): no other LMDBs under test/'
    )
    parser.add_argument(
        '--rotation', type=int, default=0, metavar='D', help='rotate images counter-clockwise by D degrees'
    )
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu, cuda or cuda:N')
    parser.add_precision_option()
    parser.add_decoding_options()
    parser.add_argument(
        '--openai_meanstd', action='store_true', help='normalise with the OpenAI CLIP statistics instead of 0.5/0.5'
    )
    parser.add_argument(
        '--out', action='append', default=[], metavar='FILE', help='also write the results to FILE (.json or .csv)'
    )
    parser.add_trust_option()
    parser.add_argument(
        '--clip_refine',
        action='store_true',
        help="refine each prediction with the model's CLIP: the best of readings drawn from its per-character "
        "distributions (the original's optional post-processing; not used for the paper's results)",
    )
    parser.add_argument(
        '--sample_K', type=int, default=5, metavar='K', help='--clip_refine: candidates kept, the K most probable draws'
    )
    parser.add_argument(
        '--sample_K2',
        type=int,
        default=5,
        metavar='K2',
        help='--clip_refine: draw each character among its K2 most probable (<= 0: among all)',
    )
    parser.add_argument('--sample_total', type=int, default=50, metavar='N', help='--clip_refine: draws per image')
    parser.add_argument(
        '--sample_prompt',
        metavar='TEXT',
        help='--clip_refine: text CLIP reads before each candidate, e.g. "a photo of"',
    )
    parser.add_argument(
        '--alpha',
        type=float,
        default=0.1,
        help='--clip_refine: weight of the CLIP probabilities added to the softmax of the joint probabilities',
    )
    parser.add_argument(
        '--sample_seed',
        type=int,
        default=0,
        metavar='S',
        help='--clip_refine: seed of the draws (default: %(default)s)',
    )
    parser.add_second_look_option()
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_items(argv)
    if args.batch_size < 1:
        parser.error('--batch_size must be >= 1')
    if args.num_workers < 0:
        parser.error('--num_workers must be >= 0')
    if args.sample_K < 1:
        raise CLIError(f'--sample_K must be >= 1 (got {args.sample_K})')
    if args.sample_total < 1:
        raise CLIError(f'--sample_total must be >= 1 (got {args.sample_total})')
    if not math.isfinite(args.alpha):
        raise CLIError(f'--alpha must be a finite number (got {args.alpha})')
    if args.second_look is not None and (args.rotation or args.clip_refine):
        raise CLIError('--second_look: not with --rotation or --clip_refine')
    outs = results_outputs(parser, args.out)
    kwargs = model_overrides(args.refine_iters, args.decode, parse_model_args(unknown))
    if args.charset_test is None:
        kwargs['charset_test'] = benchmark_charset(args.cased, args.punctuation)  # as the original: the flags win
    elif args.charset_test != 'train':
        kwargs['charset_test'] = charset_arg(args.charset_test, '--charset_test')
    checkpoint = resolve_checkpoint(args.checkpoint)
    if Path(args.checkpoint).is_dir():
        print(f'Checkpoint: {checkpoint}')
    test_root = find_test_root(args.data_root)

    from strhub.evaluation import evaluate, plan_test_sets
    from strhub.models.second_look import SecondLookOptions

    groups, missing = plan_test_sets(test_root, args.new, args.std)
    for s in missing:
        print(f'Test set {s} not found in {test_root}: skipped')
    print(f'Additional keyword arguments: {kwargs}')
    model = load_model(checkpoint, trust=args.trust_checkpoint, **kwargs)
    if args.charset_test == 'train':
        model.charset_test = model.hparams.charset_train
        print(f"Test charset: the checkpoint's training charset ({len(model.charset_test)} characters)")
    refine = None
    if args.clip_refine:
        from strhub.models.clip4str.clip_refine import ClipRefineOptions

        refine = ClipRefineOptions(
            args.sample_K, args.sample_K2, args.sample_total, args.sample_prompt, args.alpha, args.sample_seed
        )
    results = evaluate(
        model,
        args.data_root,
        groups,
        args.batch_size,
        args.num_workers,
        args.device,
        rotation=args.rotation,
        openai_meanstd=args.openai_meanstd,
        precision=args.precision,
        clip_refine=refine,
        second_look=None if args.second_look is None else SecondLookOptions(args.second_look),
    )
    for s, reason in results.skipped.items():
        print(f'Test set {s} {reason}: skipped')
    if not results.groups:
        raise CLIError(f'no test set could be evaluated under {test_root}', exit_code=1)
    results.skipped = {**{s: 'not found' for s in missing}, **results.skipped}
    report = results.report()
    sys.stdout.write(report)
    sys.stdout.flush()

    # Written next to the checkpoint, as the original (a read-only location only costs a warning); for a shipped
    # model given by name, in the working directory rather than inside the package.
    settings = ''
    if refine is not None:  # the original's name then records the refinement settings
        settings = (
            f'K{args.sample_K2}-{args.sample_K}-{args.sample_total}_prompt{args.sample_prompt}_alpha{args.alpha}_'
        )
    if args.second_look is not None:
        settings = f'second_look{args.second_look}_'
    base = args.checkpoint if pretrained_path(args.checkpoint) else checkpoint
    log_path = Path(f'{base}.log_{settings}new{args.new}.txt')
    try:
        log_path.write_text(''.join(f'Test set {s} {r}: skipped\n' for s, r in results.skipped.items()) + report)
    except OSError as e:
        print(f'warning: cannot write {log_path}: {e}', file=sys.stderr)

    info = dict(
        checkpoint=str(checkpoint),
        data_root=str(args.data_root),
        charset_test=model.hparams.charset_test,
        model_kwargs=kwargs,
        **{k: getattr(args, k) for k in ('new', 'std', 'cased', 'punctuation', 'rotation', 'openai_meanstd')},
        device=str(next(model.parameters()).device),
        precision=args.precision,
    )
    if refine is not None:
        info['clip_refine'] = dataclasses.asdict(refine)
    if args.second_look is not None:
        info['second_look'] = args.second_look
    write_results(results, outs, info)
    return 0


if __name__ == '__main__':
    run_cli(main, prog=PROG)
