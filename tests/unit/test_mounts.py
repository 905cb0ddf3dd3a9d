import os
from pathlib import Path

import pytest

from agentainer.errors import InvalidInput
from agentainer.mounts import MountPolicy


@pytest.fixture
def root(tmp_path):
    return Path(os.path.realpath(tmp_path))


@pytest.fixture
def data_dir(root):
    # NOTE: inside the root, so only the data-dir rule can refuse it.
    path = root / "agentainer-data"
    path.mkdir()
    return path


@pytest.fixture
def policy(root, data_dir):
    return MountPolicy([root], data_dir)


def assert_refused(policy, host_path, reason=""):
    with pytest.raises(InvalidInput) as caught:
        policy.check(str(host_path))
    assert caught.value.code == "volume_refused"
    assert repr(str(host_path)) in caught.value.message
    assert reason in caught.value.message


@pytest.mark.parametrize("sub", ["", "project", "project/data", "not/created/yet"])
def test_path_under_root_is_allowed(policy, root, sub):
    (root / "project" / "data").mkdir(parents=True)
    assert policy.check(str(root / sub)) == root / sub


def test_dotdot_is_resolved_before_checking(policy, root):
    assert policy.check(f"{root}/a/../b/./c") == root / "b" / "c"
    assert_refused(policy, f"{root}/../outside", "outside the allowed volume roots")
    assert_refused(policy, f"{root}/../../../etc/passwd")


@pytest.mark.parametrize("path", [
    "/", "/etc", "/etc/passwd", "/proc", "/proc/self/root", "/sys", "/dev", "/dev/sda", "/boot",
    "/run", "/var/run/docker.sock", "/run/docker.sock", "/var/lib/docker",
])
@pytest.mark.parametrize("roots", ["tmp", "everything"])
def test_system_paths_are_refused_whatever_the_roots(root, data_dir, path, roots):
    policy = MountPolicy([root] if roots == "tmp" else [Path("/")], data_dir)
    assert_refused(policy, path)


@pytest.mark.parametrize("name", ["agent.sock", "sub/docker.sock"])
def test_sockets_are_refused(policy, root, name):
    assert_refused(policy, root / name, "may not be mounted")


@pytest.mark.parametrize("sub", ["", "redis", "admin.token"])
def test_data_dir_and_below_are_refused(policy, data_dir, sub):
    assert_refused(policy, data_dir / sub if sub else data_dir, "data directory")


@pytest.mark.parametrize("path", ["/home", "/srv/data", "/opt"])
def test_paths_outside_the_roots_are_refused(policy, path):
    assert_refused(policy, path, "outside the allowed volume roots")


def test_symlink_to_etc_is_refused(policy, root):
    (root / "innocent").symlink_to("/etc")
    assert_refused(policy, root / "innocent")
    assert_refused(policy, root / "innocent" / "passwd")


def test_symlink_to_the_docker_socket_is_refused(policy, root):
    (root / "link").symlink_to("/var/run/docker.sock")
    assert_refused(policy, root / "link")


def test_no_roots_refuses_everything(data_dir, root):
    assert_refused(MountPolicy([], data_dir), root, "(none)")
