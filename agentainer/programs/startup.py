"""What every long-running program shares: its --config/--log-level options, loading the
settings, reporting bad ones, logging, and exit statuses."""

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentainer import config as configuration
from agentainer.config import Config
from agentainer.errors import AgentainerError
from agentainer.exit_codes import ExitStatus


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and ``--log-level`` to a program's parser."""
    parser.add_argument("--config", metavar="FILE",
                        help="conf file (default: $AGENTAINER_CONFIG, the checkout's "
                             "conf/agentainer.conf, or /etc/agentainer/agentainer.conf)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")


def run(prog: str, args: argparse.Namespace, body: Callable[[Config], int],
        **overrides: Any) -> int:
    """Load the settings (flags override), set up logging, and run ``body``.

    Returns:
        ``body``'s status; CONFIG for bad settings or a refused start, INTERRUPTED on Ctrl-C.
    """
    try:
        settings = configuration.load(Path(args.config) if args.config else None,
                                      overrides={"log_level": args.log_level, **overrides})
    except AgentainerError as ex:
        print(f"{prog}: {ex.message}", file=sys.stderr)
        return ExitStatus.CONFIG
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return body(settings)
    except AgentainerError as ex:
        print(f"{prog}: {ex.message}", file=sys.stderr)
        return ExitStatus.CONFIG
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
