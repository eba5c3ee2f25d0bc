"""The test sets (spec §3.3) and finding them under a dataset root: ``<root>/test/<name>/data.mdb``."""

import os
from pathlib import Path
from typing import Dict, List, Tuple, Union

# The original's tables: 'Benchmark (Subset)' and 'Benchmark' (identical in CLIP4STR; PARSeq's subset used
# IC13_857), then 'New' with --new.
TEST_BENCHMARK_SUB = ('IIIT5k', 'SVT', 'IC13_1015', 'IC15_1811', 'IC15_2077', 'SVTP', 'CUTE80', 'HOST', 'WOST')
TEST_BENCHMARK = ('IIIT5k', 'SVT', 'IC13_1015', 'IC15_1811', 'IC15_2077', 'SVTP', 'CUTE80', 'HOST', 'WOST')
TEST_NEW = ('ArT', 'COCOv1.4', 'Uber')
TEST_ALL = tuple(dict.fromkeys(TEST_BENCHMARK_SUB + TEST_BENCHMARK + TEST_NEW))


def find_lmdbs(test_root: Union[str, os.PathLike]) -> List[str]:
    """Names (paths relative to ``test_root``, '/'-separated, sorted) of the folders under it holding a
    ``data.mdb``; hidden folders are not searched. Linked folders are (test sets often live on another disk, as
    training's glob finds them), each real folder once."""
    test_root = Path(test_root)
    names, seen = [], set()
    for root, dirs, files in os.walk(test_root, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree, or a second link to the same set
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        if 'data.mdb' in files and Path(root) != test_root:
            names.append(Path(root).relative_to(test_root).as_posix())
    return sorted(names)


def plan_test_sets(
    test_root: Union[str, os.PathLike], new: bool = False, std: bool = False
) -> Tuple[Dict[str, List[str]], List[str]]:
    """The test sets to evaluate by group, and the standard sets that are missing.

    Args:
        new: also the 'New' group (ArT, COCOv1.4, Uber).
        std: only the standard groups; otherwise every other LMDB under ``test_root`` forms an 'Other' group.

    Returns:
        ``({'Benchmark': [...], 'New': [...], 'Other': [...]}, missing)``: groups in that order, sets in the order of
        the constants above (other sets by name), present sets only, empty groups dropped.
    """
    present = set(find_lmdbs(test_root))
    wanted = {'Benchmark': list(dict.fromkeys(TEST_BENCHMARK_SUB + TEST_BENCHMARK))}
    if new:
        wanted['New'] = list(TEST_NEW)
    missing = [s for names in wanted.values() for s in names if s not in present]
    groups = {g: [s for s in names if s in present] for g, names in wanted.items()}
    if not std:
        groups['Other'] = [s for s in sorted(present) if s not in TEST_ALL]
    return {g: names for g, names in groups.items() if names}, missing
