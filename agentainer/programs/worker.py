"""``agentainer-worker``: an RQ worker that replays queued requests and delivers webhooks.

It runs jobs in its own process (no fork per job), on collaborators built once from its
own ``--config``. It keeps a heartbeat (liveness.py), so when it is killed mid-delivery the
janitor gives its lease and its drain claim back within seconds (``liveness_timeout``).
TERM is a warm shutdown: the current job finishes first, which takes at most one time
slice (``replay.DRAIN_SLICE``) plus one delivery (connect + read timeout).

Beside RQ's loop, a thread pumps webhook events (``webhooks.outbox``): every half second
it moves new events to delivery records and enqueues the deliveries that are due, which
this worker and the others then run.
"""

import argparse
import sys

from agentainer.agents.store import translate_redis_errors
from agentainer.config import Config
from agentainer.errors import Unavailable
from agentainer.exit_codes import ExitStatus
from agentainer.programs import startup as daemon
from agentainer.wiring import build, replay_worker


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentainer-worker", allow_abbrev=False,
        description="Replay journaled requests to agents (normally run by supervisord).")
    daemon.add_options(parser)
    parser.add_argument("--name", help="worker name prefix (default: worker); the host, PID "
                                       "and a random part follow")
    parser.add_argument("--burst", action="store_true",
                        help="exit once the webhook and replay queues are empty")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return daemon.run("agentainer-worker", args, lambda settings: work(settings, args))


def work(settings: Config, args: argparse.Namespace) -> int:
    """Run the RQ worker on the webhook and replay queues until TERM (or, with --burst,
    until they are empty), and the webhook pump beside it."""
    components = build(settings, kind=args.name or "worker")
    heartbeat, pump = components.heartbeat, components.webhook_pump
    worker = replay_worker(components)
    heartbeat.start(now=True)
    pump.start()
    try:
        translate_redis_errors(worker.work)(burst=args.burst, logging_level=settings.log_level)
    except Unavailable as ex:
        print(f"agentainer-worker: {ex}", file=sys.stderr)
        return ExitStatus.UNAVAILABLE
    finally:
        pump.stop()
        heartbeat.stop()
    return ExitStatus.SUCCESS
