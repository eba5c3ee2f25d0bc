#!/usr/bin/env python3
"""Creates an STR LMDB from a folder of images and a ground-truth file (the format of PARSeq's tool).

Usage::

    python tools/create_lmdb_dataset.py INPUT_DIR GT_FILE OUTPUT_DIR

``GT_FILE`` has one sample per line: ``relative/path/to/image<TAB>label`` (paths relative to ``INPUT_DIR``). A line
without a tab may use a single space instead: the path, then the label (the rest of the line). Blank lines are
ignored. Images are stored as their original file bytes, after checking that Pillow can decode them; malformed
lines, empty labels, missing files and undecodable images are skipped and reported by reason.

The LMDB is built in a temporary folder on the same file system (inside OUTPUT_DIR when it exists, else beside it)
and moved into place only when at least one sample is valid; a failed or interrupted run leaves OUTPUT_DIR as it was
(with ``--overwrite``, the old LMDB stays readable until the new one replaces it). Other files in OUTPUT_DIR are kept.

Exit codes: 0 written, 1 nothing valid to write, 2 bad arguments or destination (missing INPUT_DIR/GT_FILE, existing
output, a destination that cannot be written), 130 interrupted.
"""

from typing import List, Optional

from _cli import ArgumentParser, CLIError, run_cli

from strhub.data.create_lmdb import create_lmdb_dataset


def main(argv: Optional[List[str]] = None) -> int:
    p = ArgumentParser(description=__doc__)
    p.add_argument('input_dir', help='folder the image paths in GT_FILE are relative to')
    p.add_argument('gt_file', help='ground truth: "path<TAB>label" per line')
    p.add_argument('output_dir', help='LMDB folder to create')
    p.add_argument('--overwrite', action='store_true', help='replace an existing LMDB at OUTPUT_DIR')
    p.add_argument('--max_examples', type=int, default=10, help='skipped lines to show')
    args = p.parse_args(argv)
    try:
        report = create_lmdb_dataset(
            args.input_dir, args.gt_file, args.output_dir, args.overwrite, args.max_examples, progress=True
        )
    except OSError as e:  # missing inputs, existing or unwritable output (one-line messages)
        raise CLIError(str(e)) from None
    except KeyboardInterrupt:
        raise CLIError(f'interrupted: {args.output_dir} left as it was', exit_code=130) from None
    print(report)
    if not report.written:
        raise CLIError('no valid sample was found', exit_code=1)
    return 0


if __name__ == '__main__':
    run_cli(main, prog='create_lmdb_dataset.py')
