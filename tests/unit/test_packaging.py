"""setup.py ships the scripts and installs the man pages."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_scripts_and_man_pages(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("agentainer-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for page in ROOT.glob("man/*.1"):
        assert any(n.endswith(f"data/share/man/man1/{page.name}") for n in names), page.name
    for script in ROOT.glob("bin/agentainer*"):
        assert any(n.endswith(f"data/scripts/{script.name}") for n in names), script.name
