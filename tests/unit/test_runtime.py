"""A failed pull says whether the image is missing (404) or the registry unreachable (503)."""

import pytest

from agentainer.errors import NotFound, Unavailable
from agentainer.runtime import _pull_failed


@pytest.mark.parametrize("reason, status, expected", [
    ("manifest for x:latest not found: manifest unknown", 404, NotFound),
    ("pull access denied for x, repository does not exist", 500, NotFound),
    ('Get "https://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused',
     500, Unavailable),
    ("context deadline exceeded", None, Unavailable),
])
def test_pull_failures_are_classified(reason, status, expected):
    error = _pull_failed("x:latest", reason, status)
    assert type(error) is expected and error.code == "image_pull_failed"
    assert "cannot pull image 'x:latest'" in str(error)


def test_a_daemon_whose_socket_is_gone_is_not_reachable(tmp_path):
    from agentainer.runtime import DockerRuntime
    runtime = DockerRuntime(base_url=f"unix://{tmp_path}/docker.sock")
    assert runtime.reachable(timeout=1) is False
