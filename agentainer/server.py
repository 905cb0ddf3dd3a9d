"""``agentainer-server``: the REST API under waitress."""

import argparse
import logging
import sys
from pathlib import Path

import waitress

from agentainer import config as configuration
from agentainer.api.app import create_app
from agentainer.errors import AgentainerError
from agentainer.status import ExitStatus

logger = logging.getLogger(__name__)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentainer-server",
        description="Serve the Agentainer REST API (normally run by supervisord).")
    parser.add_argument("--config", metavar="FILE",
                        help="conf file (default: $AGENTAINER_CONFIG, the checkout's "
                             "conf/agentainer.conf, or /etc/agentainer/agentainer.conf)")
    parser.add_argument("--host", help="listen address (setting: host)")
    parser.add_argument("--port", help="listen port (setting: port)")
    parser.add_argument("--threads", help="worker threads (setting: threads)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        settings = configuration.load(
            Path(args.config) if args.config else None,
            overrides={"host": args.host, "port": args.port, "threads": args.threads,
                       "log_level": args.log_level})
        logging.basicConfig(level=settings.log_level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        app = create_app(settings)
    except AgentainerError as ex:
        print(f"agentainer-server: {ex.message}", file=sys.stderr)
        return ExitStatus.CONFIG
    logger.info("listening on http://%s:%s (config: %s)", settings.host, settings.port,
                settings.source)
    try:
        waitress.serve(app, host=settings.host, port=settings.port, threads=settings.threads,
                       ident="agentainer", clear_untrusted_proxy_headers=True)
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except OSError as ex:
        logger.error("cannot listen on %s:%s: %s", settings.host, settings.port, ex)
        return ExitStatus.UNAVAILABLE
    return ExitStatus.SUCCESS
