"""`bench index`: build or update the results index (benchmark.page.index) from the command line."""

from __future__ import annotations

import time

from ..core import paths
from ..core.errors import BenchError
from ..page.board import load
from ..page.index import INDEX_NAME, ResultsIndex

SHOWN_PROBLEMS = 10


def cmd_index(args, ap) -> int:
    folder = paths.results_dir(args.results)
    if not folder.is_dir():
        raise BenchError(f"no results folder at {folder}; name one with --results or ${paths.RESULTS_ENV}")
    start = time.perf_counter()
    index = ResultsIndex(folder)
    report = index.rebuild() if args.rebuild else index.sync()
    board = load(folder, index=index)  # ranks the protocols whose records changed, and remembers the rankings
    print(
        f"{report.files} record files: {report.checked} read and checked, {report.files - report.read} unchanged, "
        f"{report.removed} removed; {len(board.table)} entries shown, {len(board.warnings)} left out "
        f"({time.perf_counter() - start:.1f} s)"
    )
    for skipped in board.warnings[:SHOWN_PROBLEMS]:
        print(f"  left out {skipped.path}: {skipped.reason}")
    if len(board.warnings) > SHOWN_PROBLEMS:
        print(f"  ... and {len(board.warnings) - SHOWN_PROBLEMS} more (the leaderboard lists them all)")
    where = "" if index.location == str(folder / INDEX_NAME) else " (the results folder cannot be written)"
    print(f"index: {index.location}{where}")
    index.close()
    return 0
