"""The A/B of ``make bench``: this tree against the commit before issue 12's work.

:func:`exported` puts the baseline commit's files in a temporary directory (``git
archive``), for a second, complete :class:`bench.stack.Stack` to run from; :func:`alternate`
then loads one stack at a time, the order reversed every round (A B, B A, A B, ...), so a
drift of the machine over the run weighs on both alike.
"""

import contextlib
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# The last commit before issue 12's work (the proxy's hot path and settings).
BASELINE = "e5cc38b"


def has_commit(root: Path, commit: str) -> bool:
    """Whether the checkout at ``root`` holds ``commit`` (a shallow clone may not)."""
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet",
                               f"{commit}^{{commit}}"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@contextlib.contextmanager
def exported(root: Path, commit: str) -> Iterator[Path]:
    """A temporary directory holding ``commit``'s tree; removed afterwards."""
    tree = Path(tempfile.mkdtemp(prefix=f"agentainer-bench-{commit}-"))
    try:
        archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", commit],
                                 capture_output=True, check=True, timeout=60)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True,
                       timeout=60)
        yield tree
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def alternate(loads: dict[str, Callable[[], tuple[dict, dict]]], rounds: int) -> dict:
    """Run each load once a round, in reversed order every other round.

    Args:
        loads: name -> a run returning wrk's figures and their cost (bench.cost.measure).
        rounds: how many rounds.

    Returns:
        name -> the median req/s and server CPU µs per request, and every run's figures.
    """
    names = list(loads)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            result, cost = loads[name]()
            runs[name].append({"rps": result["rps"], "p99_ms": result["p99_ms"],
                               "requests": result["requests"], "errors": result["errors"],
                               "non2xx": result["non2xx"], "cpu_us": cost["cpu_us"]})
    return {name: {"rps": statistics.median(r["rps"] for r in runs[name]),
                   "cpu_us": statistics.median(r["cpu_us"] for r in runs[name]),
                   "runs": runs[name]} for name in names}
