"""``agentainer-monitor``: the monitor (monitor/reconcile.py) as a program, until TERM.

Its collaborators, the monitor itself included, come from the composition root (wiring.py),
built once from its own ``--config``.
"""

import argparse
import signal

from agentainer import wiring
from agentainer.config import Config
from agentainer.exit_codes import ExitStatus
from agentainer.programs import startup as daemon


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentainer-monitor", allow_abbrev=False,
        description="Watch agents: Docker events, health probes, auto-restart with backoff, "
                    "reconciliation and metrics (normally run by supervisord).")
    daemon.add_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return daemon.run("agentainer-monitor", make_parser().parse_args(argv), watch)


def watch(settings: Config) -> int:
    """Build a monitor from the settings and run it until TERM."""
    components = wiring.build(settings, kind="monitor")
    monitor = wiring.monitor(settings, components)
    signal.signal(signal.SIGTERM, lambda *_: monitor.stop())
    components.heartbeat.start(now=True)
    try:
        monitor.run()
    finally:
        components.heartbeat.stop()
    return ExitStatus.SUCCESS
