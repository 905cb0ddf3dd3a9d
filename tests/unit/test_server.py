"""agentainer-server refuses bad settings at start, naming where they came from."""

import os
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "bin" / "agentainer-server"


def start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAINER_")}
    return subprocess.run([sys.executable, str(SERVER), *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=30)


def test_bad_env_value_is_named(tmp_path):
    result = start({"AGENTAINER_CONFIG": "/dev/null", "AGENTAINER_PORT": "eighty"})
    assert result.returncode == 7
    assert "AGENTAINER_PORT" in result.stderr and "port" in result.stderr
    assert "'eighty'" in result.stderr


def test_bad_file_value_names_file_and_key(tmp_path):
    conf = tmp_path / "agentainer.conf"
    conf.write_text("[agentainer]\nstop_timeout = soon\n")
    result = start({"AGENTAINER_CONFIG": str(conf)})
    assert result.returncode == 7
    assert str(conf) in result.stderr and "stop_timeout" in result.stderr
    assert "'soon'" in result.stderr


def test_unknown_key_is_refused(tmp_path):
    conf = tmp_path / "agentainer.conf"
    conf.write_text("[agentainer]\nprot = 8081\n")
    result = start({"AGENTAINER_CONFIG": str(conf)})
    assert result.returncode == 7 and "'prot'" in result.stderr


def test_bad_flag_value(tmp_path):
    result = start({"AGENTAINER_CONFIG": "/dev/null"}, "--threads", "0")
    assert result.returncode == 7 and "--threads" in result.stderr
