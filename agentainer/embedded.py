"""``agentainer-redis``: the embedded Redis, as the settings describe it.

With ``embedded_redis`` on, it becomes ``redis-server`` listening on ``redis_url``'s port
on loopback only (agents cannot reach it), with the append-only file on and
``appendfsync`` as set, its data in ``<data_dir>/redis``, and ``maxmemory`` at
``redis_maxmemory`` with the ``noeviction`` policy: a full Redis refuses writes (the proxy
answers 507) rather than dropping keys, and the journal's own budget
(``journal_max_bytes``, below it) is reached first. With it off, or with a
``redis_url`` that names another host (an external Redis either way), it idles, so
supervisord's status stays clean.
"""

import argparse
import os
import shutil
import signal
import sys
from urllib.parse import urlparse

from agentainer import daemon
from agentainer.config import Config
from agentainer.errors import InvalidConfig
from agentainer.status import ExitStatus

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentainer-redis", allow_abbrev=False,
        description="Run the embedded Redis for Agentainer (normally run by supervisord).")
    daemon.add_options(parser)
    return parser


def redis_command(settings: Config, binary: str) -> list[str]:
    """Return the redis-server command line for the settings."""
    port = urlparse(settings.redis_url).port or 6379
    data = settings.data_dir / "redis"
    return [binary, "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes",
            "--dir", str(data), "--appendonly", "yes", "--appendfsync", settings.appendfsync,
            "--maxmemory", str(settings.redis_maxmemory), "--maxmemory-policy", "noeviction",
            "--save", "", "--daemonize", "no"]


def is_embedded(settings: Config) -> bool:
    """Return whether the settings ask for the embedded Redis (on, and on loopback)."""
    host = urlparse(settings.redis_url).hostname or "127.0.0.1"
    return settings.embedded_redis and host in LOOPBACK


def main(argv: list[str] | None = None) -> int:
    return daemon.run("agentainer-redis", make_parser().parse_args(argv), serve)


def serve(settings: Config) -> int:
    """Become redis-server (embedded), or idle until TERM (external Redis)."""
    if not is_embedded(settings):
        print(f"agentainer-redis: using the external Redis at {settings.redis_url}; idle",
              flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            signal.pause()
    if settings.redis_maxmemory <= settings.journal_max_bytes:
        raise InvalidConfig(f"redis_maxmemory = {settings.redis_maxmemory} must exceed "
                            f"journal_max_bytes = {settings.journal_max_bytes}")
    binary = shutil.which("redis-server")
    if binary is None:
        print("agentainer-redis: redis-server is not installed (make run installs it)",
              file=sys.stderr)
        return ExitStatus.UNAVAILABLE
    (settings.data_dir / "redis").mkdir(parents=True, exist_ok=True)
    os.execv(binary, redis_command(settings, binary))
    return ExitStatus.ERROR  # NOTE: not reached; execv replaces this process
