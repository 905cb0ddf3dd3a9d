"""wiring.py is the one composition root: no other module builds a client or a service."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "agentainer"
# NOTE: what only the composition root may construct (redis.Redis and its from_url included)
BUILT_IN_WIRING = {"Redis", "from_url", "DockerRuntime", "SwarmRuntime", "DockerClient",
                   "from_env",
                   "AgentStore", "Journal", "ReplayScheduler", "Drainer", "Upstream",
                   "AgentService", "HealthRecords", "MetricsHistory", "Liveness", "Janitor",
                   "Callers", "Monitor", "RestartPolicy", "Periodic"}
# NOTE: the Docker adapter (DockerRuntime, built in wiring.py) opens its docker-py client lazily
# and docker.types.RestartPolicy (a service's, in the Swarm adapter) is not the monitor's
ALLOWED = {"wiring.py": BUILT_IN_WIRING, "agents/docker_runtime.py": {"DockerClient", "from_env"},
           "agents/swarm_runtime.py": {"RestartPolicy"}}


def constructed(path: Path) -> set[str]:
    """Return the names in ``BUILT_IN_WIRING`` that ``path`` calls."""
    calls = (node.func for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call))
    return {name for func in calls
            if (name := getattr(func, "attr", getattr(func, "id", None))) in BUILT_IN_WIRING}


def test_only_wiring_constructs_clients_journals_and_services():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        if names := constructed(path) - ALLOWED.get(relative, set()):
            offenders[relative] = names
    assert offenders == {}
