"""The README figures the harnesses publish: the block between markers, and where they ran.

``make bench`` writes its table between ``<!-- bench:start -->`` and ``<!-- bench:end -->``,
``make chaos`` between ``<!-- chaos:start -->`` and ``<!-- chaos:end -->``.
"""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def write_block(name: str, block: str, *, heading: str, readme: Path = README) -> None:
    """Put ``block`` between the ``name`` markers of ``readme``.

    Args:
        name: the markers' name (``bench`` for ``<!-- bench:start -->``).
        block: the text to put between them.
        heading: the section appended at the end, markers and all, when they are missing.
        readme: the file to write.
    """
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    content = f"{start_mark}\n{block}\n{end_mark}"
    if start_mark in text and end_mark in text:
        start = text.index(start_mark)
        end = text.index(end_mark, start) + len(end_mark)
        text = text[:start] + content + text[end:]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + content + "\n"
    readme.write_text(text)


def machine() -> str:
    """Describe the CPU: ``2 × AMD EPYC (nproc 2)``."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} × {model} (nproc {os.cpu_count()})"


def git_commit() -> str:
    """Return HEAD's short hash, with ``+ local changes`` when the code differs from it."""
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no", "--", "agentainer", "bin"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" + local changes" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
