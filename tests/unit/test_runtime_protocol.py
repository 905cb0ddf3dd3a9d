"""DockerRuntime, and the fake runtime the monitor's tests use, satisfy the Runtime protocol."""

import ast
import inspect
from pathlib import Path

import pytest

from agentainer.agents.docker_runtime import DockerRuntime, _Events, summarize
from agentainer.agents.runtime import Runtime, RuntimeEvent
from agentainer.agents.swarm_runtime import SwarmRuntime
from tests.unit.test_monitor import FakeRuntime

PACKAGE = Path(__file__).resolve().parents[2] / "agentainer"
PROTOCOL_METHODS = sorted(name for name, member in vars(Runtime).items()
                          if inspect.isfunction(member) and not name.startswith("_"))


def parameters(function) -> list[tuple[str, inspect._ParameterKind, object]]:
    """Return a function's parameters as (name, kind, default), ``self`` included."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def imported(path: Path) -> set[str]:
    """Return the modules ``path`` imports (``from x import y`` gives ``x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


BACKENDS = ("agents/docker_runtime.py", "agents/swarm_runtime.py")


def test_only_wiring_imports_the_backends_and_only_they_import_docker():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        modules = imported(path)
        if relative not in BACKENDS and any(
                m == "docker" or m.startswith("docker.") for m in modules):
            offenders[relative] = "docker"
        # NOTE: the Swarm backend is the Engine's, plus services
        if relative not in ("wiring.py", BACKENDS[1]) and \
                "agentainer.agents.docker_runtime" in modules:
            offenders[relative] = "docker_runtime"
        if relative != "wiring.py" and "agentainer.agents.swarm_runtime" in modules:
            offenders[relative] = "swarm_runtime"
    assert offenders == {}


@pytest.mark.parametrize("backend", [DockerRuntime, SwarmRuntime, FakeRuntime])
@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_a_backend_has_every_protocol_method_with_its_signature(backend, name):
    method = getattr(backend, name, None)
    assert callable(method), f"{backend.__name__} lacks {name}"
    assert parameters(method) == parameters(getattr(Runtime, name))


def test_docker_events_cross_the_seam_as_runtime_events():
    closed = []

    class DockerStream:
        def __init__(self, events):
            self._events = iter(events)

        def __next__(self):
            return next(self._events)

        def close(self):
            closed.append(True)

    stream = _Events(DockerStream([
        {"Action": "die", "Actor": {"Attributes": {"agentainer.id": "agent-1", "exitCode": "3"}}},
        {"Action": "start", "Actor": {"Attributes": {}}},
    ]))
    assert list(stream) == [RuntimeEvent("die", "agent-1", "3"), RuntimeEvent("start", "")]
    stream.close()
    assert closed == [True]


def test_a_docker_stats_sample_is_summarized():
    sample = {
        "cpu_stats": {"cpu_usage": {"total_usage": 300}, "system_cpu_usage": 2000,
                      "online_cpus": 2},
        "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
        "memory_stats": {"usage": 500, "limit": 1000, "stats": {"inactive_file": 100}},
        "networks": {"eth0": {"rx_bytes": 7, "tx_bytes": 9}},
        "blkio_stats": {"io_service_bytes_recursive": [{"op": "Read", "value": 4},
                                                       {"op": "Write", "value": 5}]},
        "pids_stats": {"current": 3},
    }
    assert summarize(sample, now=12.5) == {
        "timestamp": 12500, "cpu_percent": 40.0, "memory_bytes": 400,
        "memory_limit_bytes": 1000, "network_rx_bytes": 7, "network_tx_bytes": 9,
        "block_read_bytes": 4, "block_write_bytes": 5, "pids": 3,
    }
