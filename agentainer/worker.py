"""``agentainer-worker``: an RQ worker that replays queued requests.

It runs jobs in its own process (no fork per job), so a worker killed mid-delivery
takes its lease with it; the janitor sweeps the lease back to the queue when it expires.
TERM is a warm shutdown: the current job finishes first, which takes at most one time
slice (``replay.DRAIN_SLICE``) plus one delivery (connect + read timeout).
"""

import argparse
import sys

import redis
import rq

from agentainer import daemon
from agentainer.config import Config
from agentainer.replay import QUEUE
from agentainer.status import ExitStatus


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentainer-worker", allow_abbrev=False,
        description="Replay journaled requests to agents (normally run by supervisord).")
    daemon.add_options(parser)
    parser.add_argument("--name", help="worker name (default: host and PID)")
    parser.add_argument("--burst", action="store_true",
                        help="exit once the replay queue is empty")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return daemon.run("agentainer-worker", args, lambda settings: work(settings, args))


def work(settings: Config, args: argparse.Namespace) -> int:
    """Run the RQ worker on the replay queue until TERM (or, with --burst, until empty)."""
    connection = redis.Redis.from_url(settings.redis_url)
    worker = rq.SimpleWorker([rq.Queue(QUEUE, connection=connection)], connection=connection,
                             name=args.name)
    try:
        worker.work(burst=args.burst, logging_level=settings.log_level)
    except redis.ConnectionError as ex:
        print(f"agentainer-worker: Redis is unreachable: {ex}", file=sys.stderr)
        return ExitStatus.UNAVAILABLE
    return ExitStatus.SUCCESS
