"""nginx as a plain reverse proxy to the benchmark's upstream container: the yardstick.

Debian's nginx (``make bench`` installs it without starting the packaged service), run by
the benchmark as a child process on a free loopback port, with a configuration of its own
in the run's data directory: ``daemon off``, its pid file and error log there, no access
log, ``worker_processes auto`` (one per core), and a keep-alive upstream pool
(``proxy_http_version 1.1`` and an empty ``Connection`` header, as nginx's documentation
has it for upstream keep-alive).
"""

import os
import shutil
import signal
import subprocess
from pathlib import Path

from bench.cost import process_tree

CONF = """\
worker_processes auto;
daemon off;
pid {data}/nginx.pid;
error_log {data}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {data}/body;
    proxy_temp_path {data}/proxy;
    fastcgi_temp_path {data}/fastcgi;
    uwsgi_temp_path {data}/uwsgi;
    scgi_temp_path {data}/scgi;
    upstream agent {{
        server {upstream};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://agent;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    """The nginx binary (in /usr/sbin, which a user's PATH may lack), or None."""
    return shutil.which("nginx", path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))


class Nginx:
    """One nginx proxying ``127.0.0.1:port`` to ``upstream`` (``ip:port``); stop it by PID."""

    def __init__(self, binary: str, data_dir: Path, upstream: str, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.conf = data_dir / "nginx.conf"
        self.conf.write_text(CONF.format(data=data_dir, upstream=upstream, port=port))
        self._command = [binary, "-p", str(data_dir), "-c", str(self.conf),
                         "-e", str(data_dir / "error.log")]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.data_dir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(self._command, stdout=out,
                                            stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        """The master's and its workers' PIDs (none once stopped)."""
        return process_tree(self.process.pid) if self.running() else []

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown) to the master; SIGKILL to all if it lingers."""
        if not self.running():
            return
        workers = self.pids()[1:]
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            for pid in workers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
