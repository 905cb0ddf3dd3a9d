"""``agentainer-redis``: the embedded Redis, as the settings describe it.

With ``embedded_redis`` on, it becomes ``redis-server`` listening on ``redis_url``'s port
on loopback only (agents cannot reach it), with the append-only file on and
``appendfsync`` as set, its data in ``<data_dir>/redis``, and ``maxmemory`` at
``redis_maxmemory`` with the ``noeviction`` policy: a full Redis refuses writes (the proxy
answers 507) rather than dropping keys, and the journal's own budget
(``journal_max_bytes``, below it) is reached first. With it off, or with a
``redis_url`` that names another host (an external Redis either way), it idles, so
supervisord's status stays clean.

APPSEC: the embedded Redis is not an open door. It requires the password in
``<data_dir>/redis.password`` (generated at first start, mode 0600; see
``redis_password.py``), which reaches redis-server as ``requirepass`` on its standard
input (``redis-server -`` reads configuration from stdin), never on its command line, which
any local user can read in ``ps``. The data directory and ``<data_dir>/redis`` are 0700 and
redis-server runs under umask 077, so its append-only files are 0600.
"""

import argparse
import os
import shutil
import signal
import stat
import sys
from pathlib import Path
from urllib.parse import urlparse

from agentainer import redis_password
from agentainer.config import Config
from agentainer.errors import InvalidConfig
from agentainer.exit_codes import ExitStatus
from agentainer.programs import startup as daemon
from agentainer.redis_password import is_embedded

__all__ = ["is_embedded", "main", "make_parser", "redis_command", "redis_config", "serve"]


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
            "--save", "", "--daemonize", "no",
            "-"]  # NOTE: last: the rest of the configuration (redis_config) is on stdin


def redis_config(password: str) -> str:
    """Return the configuration redis-server reads on stdin: what ``ps`` must not show."""
    # NOTE: every byte hex-escaped in a quoted string (sdssplitargs), so a password written
    # into the file by hand, with spaces or quotes, is taken as it is
    quoted = "".join(f"\\x{byte:02x}" for byte in password.encode())
    return f'requirepass "{quoted}"\n'


def make_private(data: Path) -> None:
    """Create (or, for an older data dir, restrict) the data and Redis dirs: 0700, AOF 0600.

    NOTE: redis-server creates later files under the umask ``serve`` sets.

    Raises:
        InvalidConfig: ``data`` is a shared directory (sticky, like /tmp): not made private.
    """
    if data.is_dir() and data.stat().st_mode & stat.S_ISVTX:
        raise InvalidConfig(f"data_dir = {data} is a shared directory (sticky, like /tmp); "
                            "name a directory of Agentainer's own, e.g. /tmp/agentainer")
    redis_dir = data / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for directory in (data, redis_dir):
        directory.chmod(0o700)
    for path in redis_dir.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)


def main(argv: list[str] | None = None) -> int:
    return daemon.run("agentainer-redis", make_parser().parse_args(argv), serve)


def serve(settings: Config) -> int:
    """Become redis-server (embedded), or idle until TERM (external Redis)."""
    if not is_embedded(settings):
        print("agentainer-redis: using the external Redis at "
              f"{redis_password.redact(settings.redis_url)}; idle",
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
    os.umask(0o077)
    try:
        make_private(settings.data_dir)
    except OSError as ex:
        raise InvalidConfig(f"cannot make {settings.data_dir} private: {ex.strerror}") from ex
    config = redis_config(redis_password.for_embedded(settings)).encode()
    # NOTE: far below a pipe's capacity, so writing it all before exec cannot block
    reader, writer = os.pipe()
    os.write(writer, config)
    os.close(writer)
    os.dup2(reader, 0)
    os.close(reader)
    os.execv(binary, redis_command(settings, binary))
    return ExitStatus.ERROR  # NOTE: not reached; execv replaces this process
