#!/usr/bin/env python3
"""Draw where CLIP4STR looks while it reads: each decoding step's cross-attention over the image, for both branches.

    python tools/visualize.py CKPT IMAGES... --out DIR [--columns 8] [--device auto|cpu|cuda] [--refine_iters N]
                              [--decode ar|nar] [--no_caption] [--second_look [BELOW]] [--no_exif] [--trust_checkpoint]
                              [name:type=value ...]

For each image, ``DIR/<name>.png``: the input image with both predictions on top; then a row of panels per branch,
one per predicted character and one for ``[E]``, each the image under the attention of that step as a heat map
(nearest patch, so that each patch covers its own area; every panel scaled to its own maximum), titled with the
character, its probability and the share of attention on the class token (not a patch, so not in the map) and, for
the cross-modal decoder, on the caption's text features; last, unless ``--no_caption``, the cross-modal decoder's
attention on each caption token, a row per step. Weights are averaged over heads, in the last decoder layer; the
text is decoded one image at a time as the model is configured (``tools/read.py --batch_size 1`` reads the same) and
each position shows the final pass that predicted it (the last refinement pass when there is one). See
``strhub.models.attention_maps``. With ``--second_look`` a last row shows the views a second look reads (``tools/read.py
--second_look``, :mod:`strhub.models.second_look`), each with its reading, and the title what it would read: the most
confident of all when the first reading's confidence is under BELOW (0.9).

IMAGES are files and folders (searched recursively); unreadable images are reported and skipped. Exit code 0 when a
figure was written, 1 when none could be, 2 for usage and checkpoint errors. Needs matplotlib (``pip install
matplotlib``, or the ``bench`` extra).
"""

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from _cli import (
    MODEL_ARGS_HELP,
    ArgumentParser,
    CLIError,
    find_images,
    load_model,
    model_overrides,
    parse_model_args,
    resolve_checkpoint,
    run_cli,
    split_paths_and_model_args,
)

if TYPE_CHECKING:
    from PIL import Image

    from strhub.models.attention_maps import AttentionMaps

PROG = 'visualize.py'
PANEL_WIDTH = 1.6  # inches
DISPLAY_SIZE = 512  # larger images are shrunk to this many pixels a side for drawing


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description='Draw the cross-attention of each decoding step of a CLIP4STR checkpoint over the image.',
        epilog=MODEL_ARGS_HELP,
    )
    parser.add_argument(
        'checkpoint',
        help='checkpoint file (.ckpt/.pt), a training checkpoints/ directory, or a shipped model: clip4str-tiny',
    )
    parser.add_argument('paths', nargs='*', metavar='IMAGE', help='image files and folders (searched recursively)')
    parser.add_argument(
        '--out', required=True, type=Path, metavar='DIR', help='folder for the figures (created if missing)'
    )
    parser.add_argument('--columns', type=int, default=8, help='panels per row')
    parser.add_argument('--no_caption', action='store_true', help="leave out the attention on the caption's tokens")
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu, cuda or cuda:N')
    parser.add_decoding_options()
    parser.add_second_look_option(
        'also draw the views a second look reads (words under BELOW, default 0.9, are read again)'
    )
    parser.add_argument('--no_exif', action='store_true', help='ignore EXIF orientation tags')
    parser.add_trust_option()
    return parser


def _safe(text: str) -> str:
    # Predictions may hold '$', which matplotlib would read as the start of a formula.
    return text.replace('$', r'\$')


def draw(
    image: 'Image.Image',
    maps: 'AttentionMaps',
    path: Path,
    columns: int = 8,
    caption: bool = True,
    second_look: Optional[Tuple[float, list]] = None,
) -> Dict[str, int]:
    """Writes the figure of one image.

    Args:
        image: the PIL image as read (the patch grid covers all of it: the network input is this image resized).
        maps: its ``strhub.models.attention_maps.AttentionMaps``.
        path: the PNG to write.
        columns: panels per row.
        caption: add the cross-modal decoder's attention on the caption tokens.
        second_look: (the threshold, ``strhub.models.second_look.look_again``'s views and readings) to add their row.

    Returns:
        The number of panels drawn per branch (``visual``, ``cross``), ``caption``: 1 if that row was drawn, and with
        ``second_look`` the number of views drawn (``views``).
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    branches = [('visual', 'visual decoder', maps.visual)]
    if maps.cross is not None:
        branches.append(('cross', 'cross-modal decoder', maps.cross))
    caption = caption and maps.cross is not None
    image = image.copy()
    image.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE))
    panel_h = min(max(PANEL_WIDTH * image.height / image.width, 0.4), 2.4)
    rows = {key: -(-len(b.tokens) // columns) for key, _, b in branches}
    # Sections: the input, each branch's panels (room for a two-line title a row), the caption tokens.
    heights = [2 * panel_h + 0.6] + [rows[key] * (panel_h + 0.6) + 0.3 for key, _, _ in branches]
    if caption:
        heights.append(0.2 * len(maps.cross.tokens) + 1.3)
    final = maps.cross if maps.cross is not None else maps.visual
    title = [f'{n}: {_safe(b.text)!r} ({b.confidence:.4f})' for _, n, b in branches]
    if second_look is not None:
        below, looks = second_look
        heights.append(panel_h + 0.9)
        if final.confidence < below:
            name, _, text, confidence = max(looks, key=lambda look: look[3])
            if confidence > final.confidence:
                title.append(f'second look: {_safe(text)!r} ({confidence:.4f}, {name})')
            else:
                title.append('second look: no view read it more confidently')
        else:
            title.append(f'second look: not taken (confidence at least {below})')
    extent = (0, image.width, image.height, 0)  # the map's grid stretched over the whole image
    layout = {'caption': int(caption)}
    with matplotlib.rc_context({'font.size': 8}):
        fig = plt.figure(figsize=(columns * PANEL_WIDTH, sum(heights)), layout='constrained')
        sections = fig.subfigures(len(heights), 1, height_ratios=heights)
        ax = sections[0].subplots()
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title('\n'.join(title), fontsize=10)
        for section, (key, name, b) in zip(sections[1:], branches):
            section.suptitle(f'{name}: attention on the image patches, a panel per step', fontsize=9)
            axes = section.subplots(rows[key], columns, squeeze=False).ravel()
            for ax in axes[len(b.tokens) :]:
                ax.set_axis_off()
            for i, (ax, token) in enumerate(zip(axes, b.tokens)):
                ax.imshow(image)
                ax.imshow(b.patches[i], cmap='jet', alpha=0.5, extent=extent, interpolation='nearest', vmin=0)
                ax.set_xticks([])
                ax.set_yticks([])
                title = f'{_safe(token)!r} {b.probs[i]:.2f}\ncls {b.cls[i]:.0%}'
                if b.caption is not None:
                    title += f', text {b.caption[i].sum():.0%}'
                ax.set_title(title)
            layout[key] = sum(bool(ax.images) for ax in axes)
        if caption:
            ax = sections[1 + len(branches)].subplots()
            shown = ax.imshow(maps.cross.caption, cmap='viridis', aspect='auto', interpolation='nearest', vmin=0)
            ax.set_xticks(range(len(maps.caption_tokens)), [_safe(t) for t in maps.caption_tokens], rotation=45)
            ax.set_yticks(range(len(maps.cross.tokens)), [_safe(t) for t in maps.cross.tokens])
            ax.set_title("cross-modal decoder: attention on the caption's text features, a row per step")
            sections[1 + len(branches)].colorbar(shown, ax=ax)
        if second_look is not None:
            sections[-1].suptitle('second look: the views read again, each with its reading', fontsize=9)
            axes = sections[-1].subplots(1, max(columns, len(looks)), squeeze=False).ravel()
            for ax in axes:
                ax.set_axis_off()
            for ax, (name, view, text, confidence) in zip(axes, looks):
                ax.imshow(view)
                ax.set_title(f'{name}\n{_safe(text)!r} {confidence:.4f}')
            layout['views'] = len(looks)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return layout


def _output_names(images: List[Tuple[str, Path]]) -> List[str]:
    """One file name per image: a file given by itself by its own name, one found in a folder by its path there
    with '_' between folders; without the extension, numbered if taken."""
    taken, out = set(), []
    for name, path in images:
        stem = path.stem if name == str(path) else str(Path(name).with_suffix('')).replace('/', '_')
        unique, n = stem, 1
        while unique in taken:
            n += 1
            unique = f'{stem}_{n}'
        taken.add(unique)
        out.append(unique + '.png')
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args, unknown = build_parser().parse_known_items(argv)
    paths, model_args = split_paths_and_model_args(args.paths + unknown)
    if not paths:
        raise CLIError('no image paths given')
    if args.columns < 1:
        raise CLIError(f'--columns must be >= 1 (got {args.columns})')
    kwargs = model_overrides(args.refine_iters, args.decode, parse_model_args(model_args))
    checkpoint = resolve_checkpoint(args.checkpoint)
    if checkpoint.suffix.lower() == '.onnx':
        raise CLIError(f'{checkpoint}: an ONNX export has no attention weights to show; give its PyTorch checkpoint')
    if importlib.util.find_spec('matplotlib') is None:
        raise CLIError(
            "matplotlib is needed to draw the figures: pip install matplotlib (or pip install -e '.[bench]')"
        )
    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f'--out {args.out}: not a folder')
    images, skipped = find_images(paths)
    for path, reason in skipped:
        print(f'skipped {path}: {reason}', file=sys.stderr)
    if not images:
        raise CLIError('no image files found', exit_code=1)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f'--out {args.out}: {e.strerror}') from None

    from strhub.data.transforms import get_transform  # torch and the model code: after the cheap checks
    from strhub.device import select_device
    from strhub.models.attention_maps import attention_maps
    from strhub.models.second_look import SecondLookOptions, look_again
    from strhub.read import ImageReadError, load_image

    device = select_device(args.device)
    system = load_model(checkpoint, trust=args.trust_checkpoint, **kwargs).to(device)
    transform = get_transform(tuple(system.hparams.img_size))  # as reading does
    written = 0
    for (name, path), out_name in zip(images, _output_names(images)):
        try:
            image = load_image(path, exif=not args.no_exif)
        except ImageReadError as e:
            print(f'skipped {e}', file=sys.stderr)
            continue
        maps = attention_maps(system.model, transform(image))
        looks = None
        if args.second_look is not None:
            looks = (args.second_look, look_again(system, image, transform, SecondLookOptions(args.second_look)))
        out = args.out / out_name
        draw(image, maps, out, args.columns, caption=not args.no_caption, second_look=looks)
        written += 1
        branches = (('visual', maps.visual), ('cross-modal', maps.cross))
        summary = [
            f'{n} {b.text!r} ({b.confidence:.4f}, class token {b.cls.mean():.0%})' for n, b in branches if b is not None
        ]
        print(f'{name}: {", ".join(summary)} -> {out}')
    n_bad = len(images) - written + len(skipped)
    print(f'wrote {written} figure(s) to {args.out}' + (f', skipped {n_bad}' if n_bad else ''), file=sys.stderr)
    return 0 if written else 1


if __name__ == '__main__':
    run_cli(main, prog=PROG)
