"""``make bench-swarm``: proxied req/s and p50 through the Swarm stack and through the
supervisord-shaped stack, in one run, rounds alternating.

The Swarm stack is the one ``make swarm-up`` deployed (API on 127.0.0.1:8091: one server
task per manager, two workers, one monitor, Redis, each agent a service on an overlay);
the other is bench/stack.py's (two servers on one port, two workers, a monitor and Redis
as processes on this host, each agent a container on a bridge). Both proxy GET / to the
benchmark upstream (bench/upstream, as ``make bench``), journaled (persist on), with wrk
at c=1 and c=16.

    python -m bench.swarm [--rounds 3] [--seconds 10]
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import UPSTREAM_IMAGE, build_upstream, wrk  # noqa: E402
from bench.stack import Api, Stack, log, wait_http  # noqa: E402

SWARM_URL = "http://127.0.0.1:8091"
TOKEN_FILE = Path.home() / ".agentainer-swarm" / "admin.token"


def measure(targets: dict[str, str], rounds: int, seconds: int) -> dict[str, dict]:
    """Return, per target, the medians over ``rounds`` of c=1 p50 and c=16 req/s and p50."""
    runs: dict[str, list[tuple[dict, dict]]] = {name: [] for name in targets}
    for round_number in range(rounds):
        for name, url in targets.items():
            log(f"round {round_number + 1}/{rounds}: {name}")
            runs[name].append((wrk(url, 1, 1, seconds), wrk(url, 2, 16, seconds)))
    return {name: {
        "c1_p50_ms": statistics.median(one["p50_ms"] for one, _ in done),
        "c16_rps": statistics.median(many["rps"] for _, many in done),
        "c16_p50_ms": statistics.median(many["p50_ms"] for _, many in done),
        "errors": sum(one["errors"] + one["non2xx"] + many["errors"] + many["non2xx"]
                      for one, many in done),
    } for name, done in runs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args(argv)
    if not TOKEN_FILE.is_file():
        raise SystemExit(f"{TOKEN_FILE} is missing: run make swarm-up first")
    import docker
    client = docker.from_env()
    swarm = Api(SWARM_URL, TOKEN_FILE.read_text().strip())
    build_upstream(client)
    stack = Stack(Path(tempfile.mkdtemp(prefix="agentainer-bench-swarm-")))
    swarm_agent = None
    try:
        stack.start()
        local = Api(stack.url, stack.token)
        local.deploy(f"{stack.prefix}-echo", UPSTREAM_IMAGE, start=True)
        swarm_agent = swarm.deploy(f"{stack.prefix}-echo", UPSTREAM_IMAGE, start=True)
        targets = {"supervisord stack": f"{stack.url}/agent/{stack.prefix}-echo/",
                   "Swarm stack": f"{SWARM_URL}/agent/{stack.prefix}-echo/"}
        for url in targets.values():
            wait_http(url, timeout=60)
        results = measure(targets, args.rounds, args.seconds)
    finally:
        if swarm_agent is not None:
            swarm.session.delete(f"{SWARM_URL}/agents/{swarm_agent['id']}", timeout=60)
        stack.tear_down(client)
    print(f"| stack | p50 at c=1 | req/s at c=16 | p50 at c=16 | errors |\n|---|---|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {figures['c1_p50_ms']:.2f} ms | {figures['c16_rps']:,.0f} | "
              f"{figures['c16_p50_ms']:.2f} ms | {figures['errors']} |")
    base, over = results["supervisord stack"], results["Swarm stack"]
    print(f"\nSwarm over supervisord: p50 at c=1 {over['c1_p50_ms'] - base['c1_p50_ms']:+.2f} "
          f"ms, req/s at c=16 {over['c16_rps'] / base['c16_rps']:.2f}x "
          f"({args.rounds} alternating rounds of {args.seconds} s each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
