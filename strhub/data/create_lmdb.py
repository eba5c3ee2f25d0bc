"""An STR LMDB from a folder of images and a ground-truth file (``tools/create_lmdb_dataset.py``; the format of
PARSeq's tool): every image checked, bad lines skipped and reported by reason, the LMDB built aside and moved into
place only when at least one sample is valid."""

import io
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

from PIL import Image

from .lmdb_io import LMDB_FILES, install_lmdb, make_build_root, write_lmdb

MALFORMED, EMPTY_LABEL, MISSING, INVALID = 'malformed line', 'empty label', 'missing image', 'invalid image'


@dataclass
class Report:
    """What :func:`create_lmdb_dataset` did: ``skipped`` counts by reason, ``examples`` are the first skipped lines
    as ``(line number, reason with detail, line)``."""

    output_dir: str
    lines: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: List[Tuple[int, str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        done = f'Wrote {self.written} samples to' if self.written else 'No valid sample: nothing written,'
        out = [f'{done} {self.output_dir} ({self.lines} non-blank lines in the GT file).']
        if self.skipped:
            reasons = ', '.join(f'{r}: {n}' for r, n in sorted(self.skipped.items()))
            out.append(f'Skipped {sum(self.skipped.values())} ({reasons}). First skipped lines:')
            out += [f'  line {no}: {why}: {line!r}' for no, why, line in self.examples]
        return '\n'.join(out)


def _check_image(data: bytes) -> Optional[str]:
    """None if ``data`` is a decodable, non-empty image, else why not."""
    if not data:
        return 'empty file'
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # structure and checksums; it leaves the image unusable, hence the second open
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes everything: catches truncated files that verify() lets through
            if img.width * img.height == 0:
                return 'zero size'
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        return f'{type(e).__name__}: {e}'
    return None


def _parse(line: str) -> Optional[Tuple[str, str]]:
    parts = line.split('\t') if '\t' in line else line.split(' ', 1)
    if len(parts) != 2 or not parts[0].strip():
        return None
    return parts[0], parts[1]


def create_lmdb_dataset(
    input_dir: Union[str, Path],
    gt_file: Union[str, Path],
    output_dir: Union[str, Path],
    overwrite: bool = False,
    max_examples: int = 10,
    progress: bool = False,
) -> Report:
    """Writes the valid samples listed in ``gt_file`` as an STR LMDB at ``output_dir``.

    Args:
        input_dir: the folder the image paths in ``gt_file`` are relative to.
        gt_file: ``path<TAB>label`` lines (or ``path label`` when a line has no tab).
        output_dir: the LMDB folder (created). It is only written when at least one sample is valid; a failure or an
            interruption (KeyboardInterrupt) leaves it as it was.
        overwrite: replace an existing LMDB at ``output_dir`` (otherwise that is an error).
        max_examples: how many skipped lines to keep in the report.
        progress: show a tqdm progress bar.

    Returns:
        The report: lines read, samples written (0: nothing was written), skipped counts by reason and the first
        skipped lines.

    Raises:
        FileNotFoundError: ``input_dir`` or ``gt_file`` does not exist.
        FileExistsError: ``output_dir`` already holds an LMDB and ``overwrite`` is False, or is not a folder.
        OSError: the destination cannot be written (checked before any image is read).
    """
    input_dir, gt_file, output_dir = Path(input_dir), Path(gt_file), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f'input folder not found: {input_dir}')
    if not gt_file.is_file():
        raise FileNotFoundError(f'ground-truth file not found: {gt_file}')
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f'{output_dir} exists and is not a folder')
    if (output_dir / LMDB_FILES[0]).exists() and not overwrite:
        raise FileExistsError(f'an LMDB already exists at {output_dir} (use --overwrite to replace it)')

    report = Report(output_dir=str(output_dir))
    raw_lines = gt_file.read_bytes().splitlines()  # bytes: splits on \n, \r\n, \r only (labels may hold others)

    def skip(line_no: int, reason: str, line: str, detail: str = '') -> None:
        report.skipped[reason] += 1
        if len(report.examples) < max_examples:
            report.examples.append((line_no, f'{reason} ({detail})' if detail else reason, line))

    def samples() -> Iterator[Tuple[bytes, str]]:
        from tqdm import tqdm

        for line_no, raw in enumerate(tqdm(raw_lines, disable=not progress, unit='line'), 1):
            try:
                line = raw.decode('utf-8-sig' if line_no == 1 else 'utf-8')
            except UnicodeDecodeError as e:
                report.lines += 1
                skip(line_no, MALFORMED, raw.decode('utf-8', 'replace'), f'not UTF-8: {e.reason}')
                continue
            if not line.strip():
                continue
            report.lines += 1
            parsed = _parse(line)
            if parsed is None:
                skip(line_no, MALFORMED, line, 'expected "path<TAB>label"')
                continue
            path, label = parsed
            if not label.strip():
                skip(line_no, EMPTY_LABEL, line)
                continue
            image_path = input_dir / path
            if not image_path.is_file():
                skip(line_no, MISSING, line)
                continue
            data = image_path.read_bytes()
            problem = _check_image(data)
            if problem:
                skip(line_no, INVALID, line, problem)
                continue
            report.written += 1
            yield data, label

    build_root = make_build_root(output_dir)  # before any image is read: an unwritable destination fails at once
    try:
        build_dir = build_root / 'lmdb'  # created by write_lmdb with the usual permissions (mkdtemp's are private)
        write_lmdb(build_dir, samples())
        if report.written:
            install_lmdb(build_dir, output_dir)
    finally:
        shutil.rmtree(build_root, ignore_errors=True)
    return report
