"""``agentainer-worker``: an RQ worker that replays queued requests.

It runs jobs in its own process (no fork per job), so a worker killed mid-delivery
takes its lease with it; the janitor sweeps the lease back to the queue when it expires.
TERM is a warm shutdown: the current delivery finishes first.
"""

import argparse
import logging
import sys
from pathlib import Path

import redis
import rq

from agentainer import config as configuration
from agentainer.errors import AgentainerError
from agentainer.replay import QUEUE
from agentainer.status import ExitStatus


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentainer-worker", allow_abbrev=False,
        description="Replay journaled requests to agents (normally run by supervisord).")
    parser.add_argument("--config", metavar="FILE", help="conf file (as agentainer-server)")
    parser.add_argument("--name", help="worker name (default: host and PID)")
    parser.add_argument("--burst", action="store_true",
                        help="exit once the replay queue is empty")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        settings = configuration.load(Path(args.config) if args.config else None,
                                      overrides={"log_level": args.log_level})
    except AgentainerError as ex:
        print(f"agentainer-worker: {ex.message}", file=sys.stderr)
        return ExitStatus.CONFIG
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    connection = redis.Redis.from_url(settings.redis_url)
    worker = rq.SimpleWorker([rq.Queue(QUEUE, connection=connection)], connection=connection,
                             name=args.name)
    try:
        worker.work(burst=args.burst, logging_level=settings.log_level)
    except redis.ConnectionError as ex:
        print(f"agentainer-worker: Redis is unreachable: {ex}", file=sys.stderr)
        return ExitStatus.UNAVAILABLE
    return ExitStatus.SUCCESS
