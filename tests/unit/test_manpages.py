"""The committed man pages are exactly what argparse-manpage makes from the parsers."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def without_date(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith(".TH ")]


def test_man_pages_match_the_parsers(tmp_path):
    subprocess.run(["make", "-s", "-C", str(ROOT), "man", f"MAN_OUT={tmp_path}"], check=True,
                   stdin=subprocess.DEVNULL)
    committed = sorted(p.name for p in (ROOT / "man").glob("*.1"))
    assert committed == sorted(p.name for p in tmp_path.glob("*.1"))
    for name in committed:
        fresh = (tmp_path / name).read_text()
        assert without_date((ROOT / "man" / name).read_text()) == without_date(fresh), (
            f"man/{name} is stale: run 'make man' and commit the result")
