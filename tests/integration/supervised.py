"""The repository's own supervisord stack, run in isolation: a home, ports and networks of its own.

``supervisord.conf`` keeps its socket, pid file and logs under ``$HOME/.agentainer``, and the
``AGENTAINER_*`` variables given to supervisord reach every program it starts, so a temporary
HOME plus free ports and prefixed network names make a stack that cannot touch the user's.
Used by ``tests/integration/test_supervision.py`` and by the chaos harness (``bench/chaos``).
"""

import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from agentainer.config import REDIS_PASSWORD_FILE
from tests.helpers import free_port, wait_for, with_password
from tests.stack import BIN, Api

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PROGRAMS = ("redis", "server:server-0", "server:server-1", "worker:worker-0",
            "worker:worker-1", "monitor")


@dataclass
class Supervised:
    """One supervisord with all six programs, its files under ``home``."""

    url: str
    env: dict[str, str]
    conf: Path
    home: Path
    prefix: str

    @classmethod
    def create(cls, home: Path, settings: Mapping[str, str], *,
               prefix_stem: str = "agsup") -> "Supervised":
        """Write the stack's supervisord.conf into ``home`` and pick its ports and names.

        Args:
            home: an empty directory, the stack's HOME (its data dir is ``home/.agentainer``).
            settings: ``AGENTAINER_*`` settings for every program (ports, Redis URL, network
                names and volume roots are set here and win).
            prefix_stem: the start of the random prefix naming its networks and agents.
        """
        (home / ".agentainer" / "logs").mkdir(parents=True)
        redis_port, port = free_port(), free_port()
        conf = home / "supervisord.conf"
        conf.write_text((ROOT / "supervisord.conf").read_text().replace("%(here)s", str(ROOT)))
        prefix = f"{prefix_stem}{secrets.token_hex(3)}"
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("AGENTAINER_")}
        # NOTE: the programs run this checkout's package, whichever one the venv installed
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        env.update(settings, HOME=str(home), AGENTAINER_PORT=str(port),
                   AGENTAINER_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                   AGENTAINER_NETWORK=f"{prefix}-net",
                   AGENTAINER_INTERNAL_NETWORK=f"{prefix}-int",
                   AGENTAINER_VOLUME_ROOTS=str(home))
        return cls(f"http://127.0.0.1:{port}", env, conf, home, prefix)

    @property
    def redis_url(self) -> str:
        """The embedded Redis's URL with its password (from the data dir, once started)."""
        password = self.home / ".agentainer" / REDIS_PASSWORD_FILE
        return with_password(self.env["AGENTAINER_REDIS_URL"],
                             password.read_text().strip() if password.exists() else None)

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``supervisorctl`` against this stack."""
        return subprocess.run([str(VENV_BIN / "supervisorctl"), "-c", str(self.conf), *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def pids(self) -> dict[str, int]:
        """Return the PID of every RUNNING program."""
        status = self.ctl("status").stdout.splitlines()
        return {line.split()[0]: int(line.split("pid ")[1].split(",")[0])
                for line in status if "RUNNING" in line}

    def pid(self, program: str) -> int:
        """Return ``supervisorctl pid <program>``: 0 while it is not running."""
        answer = self.ctl("pid", program).stdout.strip()
        return int(answer) if answer.isdigit() else 0

    def start(self, *, timeout: float = 60) -> None:
        """Start supervisord; return once every program runs and the server answers."""
        subprocess.run([str(VENV_BIN / "supervisord"), "-c", str(self.conf)], env=self.env,
                       check=True, timeout=timeout)
        wait_for(lambda: len(self.pids()) == len(PROGRAMS), timeout=timeout,
                 message="all six programs running")
        wait_for(lambda: requests.get(self.url + "/health", timeout=2).ok, timeout=timeout,
                 message="the server")

    def shutdown(self, *, timeout: float = 60) -> None:
        """Stop every program and supervisord itself (agents' containers are left alone)."""
        self.ctl("shutdown")
        wait_for(lambda: self.ctl("status").returncode == 4, timeout=timeout,
                 message="supervisord to exit")

    @property
    def token(self) -> str:
        return (self.home / ".agentainer" / "admin.token").read_text().strip()

    def api(self) -> Api:
        return Api(self.url, self.token)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run ``bin/agentainer`` against this stack, as a user would."""
        env = {**self.env, "AGENTAINER_URL": self.url, "AGENTAINER_TOKEN": self.token}
        return subprocess.run([sys.executable, str(BIN / "agentainer"), *args], env=env,
                              capture_output=True, text=True, timeout=60)
