import os
import socket
from pathlib import Path

import pytest

from agentainer.agents.mounts import MountPolicy, VolumeInfo, system_homes
from agentainer.errors import MountRefused

AGENT = "agent-0123456789ab"


@pytest.fixture
def base(tmp_path):
    """A host in miniature: data, checkout, Docker root, a home, and a work tree."""
    base = Path(os.path.realpath(tmp_path))
    for sub in ("data", "checkout", "docker", "home/alice", "work/project"):
        (base / sub).mkdir(parents=True)
    return base


def make_policy(base: Path, roots=None, **kwargs) -> MountPolicy:
    kwargs.setdefault("homes", lambda: [base / "home" / "alice"])
    return MountPolicy([base] if roots is None else roots, base / "data",
                       docker_root=lambda: base / "docker", install_dir=base / "checkout",
                       **kwargs)


@pytest.fixture
def policy(base):
    return make_policy(base)


def assert_refused(policy, host_path, reason=""):
    with pytest.raises(MountRefused) as caught:
        policy.check(str(host_path))
    assert caught.value.code == "volume_refused"
    assert repr(str(host_path)) in caught.value.message
    assert reason in caught.value.message
    return caught.value.message


@pytest.mark.parametrize("sub", ["work", "work/project", "home/alice/project", "not/created/yet"])
def test_path_under_root_is_allowed(policy, base, sub):
    assert policy.check(str(base / sub)) == base / sub


def test_dotdot_is_resolved_before_checking(policy, base):
    assert policy.check(f"{base}/work/../work/./project") == base / "work" / "project"
    message = assert_refused(policy, f"{base}/work/../data", "inside Agentainer's data directory")
    assert f"resolved: {base}/data" in message
    assert_refused(policy, f"{base}/../../../../etc/passwd", "inside a system directory")


@pytest.mark.parametrize("path", [
    "/etc", "/etc/passwd", "/proc", "/proc/self/root", "/sys", "/dev", "/dev/sda", "/boot",
    "/run", "/var/run/docker.sock", "/run/docker.sock",
])
@pytest.mark.parametrize("everything", [False, True])
def test_system_paths_are_refused_whatever_the_roots(base, path, everything):
    policy = make_policy(base, roots=[Path("/")] if everything else None)
    assert_refused(policy, path, "may not be mounted into an agent")


def test_the_host_root_is_refused(base):
    assert_refused(make_policy(base, roots=[Path("/")]), "/", "the host's root directory")


@pytest.mark.parametrize("sub, what", [
    ("data", "Agentainer's data directory"), ("data/redis", "Agentainer's data directory"),
    ("checkout", "Agentainer's installation directory"),
    ("checkout/agentainer", "Agentainer's installation directory"),
    ("docker", "Docker's data root"), ("docker/volumes/x/_data", "Docker's data root"),
    ("home/alice/.ssh", "an SSH directory"),
    ("home/alice/.ssh/authorized_keys", "an SSH directory"),
])
def test_protected_paths_and_below_are_refused(policy, base, sub, what):
    assert_refused(policy, base / sub, f"it is inside {what}")


@pytest.mark.parametrize("sub, what", [
    ("", "Agentainer's data directory"),  # the data dir's parent contains it
    ("home/alice", "an SSH directory"),   # a home contains its .ssh, made or not
    ("home", "an SSH directory"),
])
def test_paths_containing_a_protected_path_are_refused(policy, base, sub, what):
    assert_refused(policy, base / sub if sub else base, f"it contains {what}")


def test_any_ssh_directory_is_refused_home_or_not(policy, base):
    assert_refused(policy, base / "work" / ".ssh", "inside an SSH directory")


def test_every_home_of_the_host_counts(base):
    assert Path("/root") in system_homes()
    policy = make_policy(base, roots=[Path("/")], homes=system_homes)
    assert_refused(policy, "/root", "it contains an SSH directory (/root/.ssh)")
    assert_refused(policy, "/home", "it contains")


def test_a_socket_is_refused_by_what_it_is_not_its_name(policy, base):
    path = base / "work" / "innocent"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        assert_refused(policy, path, "it is a socket")
    (base / "work" / "agent.sock").mkdir()  # NOTE: a directory, whatever its name
    assert policy.check(str(base / "work" / "agent.sock")) == base / "work" / "agent.sock"


@pytest.mark.parametrize("path", ["/srv/data", "/opt"])
def test_paths_outside_the_roots_are_refused(base, path):
    assert_refused(make_policy(base, roots=[base / "work"]), path,
                   "outside the allowed volume roots")


def test_symlinks_are_judged_by_where_they_lead_now(policy, base):
    link = base / "work" / "link"
    link.symlink_to(base / "work" / "project")
    assert policy.check(str(link)) == base / "work" / "project"
    link.unlink()
    link.symlink_to("/etc")  # swapped after a first check: the next one sees it
    assert_refused(policy, link, "(resolved: /etc)")
    assert_refused(policy, link / "passwd", "a system directory")


def test_symlink_to_the_docker_socket_is_refused(policy, base):
    (base / "work" / "link").symlink_to("/var/run/docker.sock")
    assert_refused(policy, base / "work" / "link")


def test_no_roots_refuses_everything(base):
    assert_refused(make_policy(base, roots=[]), base / "work", "(none)")


def assert_volume_refused(policy, volume, reason):
    with pytest.raises(MountRefused) as caught:
        policy.check_volume(volume, AGENT)
    assert caught.value.code == "volume_refused" and reason in caught.value.message


@pytest.mark.parametrize("options", [{}, {"type": "nfs", "o": "addr=10.0.0.1",
                                          "device": ":/export"}])
def test_a_volume_agentainer_created_for_the_agent_is_allowed(policy, options):
    policy.check_volume(VolumeInfo("data", AGENT, "local", options), AGENT)


@pytest.mark.parametrize("owner, maker", [("", "someone else"),
                                          ("agent-ffffffffffff", "agent agent-ffffffffffff")])
def test_a_volume_not_created_for_the_agent_is_refused(policy, owner, maker):
    assert_volume_refused(policy, VolumeInfo("data", owner, "local"),
                          f"created by {maker}, not by Agentainer for this agent")


@pytest.mark.parametrize("options", [
    {"type": "none", "o": "bind", "device": "/etc"}, {"o": "rbind,ro", "device": "x"},
    {"type": "ext4", "device": "/dev/sda1"},
])
def test_a_volume_that_mounts_a_host_path_is_refused_even_if_ours(policy, options):
    assert_volume_refused(policy, VolumeInfo("data", AGENT, "local", options),
                          "mounts a host path")


def test_a_volume_of_another_driver_is_refused(policy):
    assert_volume_refused(policy, VolumeInfo("data", AGENT, "sshfs"), "uses driver 'sshfs'")


@pytest.mark.parametrize("volume", [
    VolumeInfo("shared", "", "local"),
    VolumeInfo("shared", "", "local", {"type": "none", "o": "bind", "device": "/srv/x"}),
])
def test_a_listed_volume_is_allowed_whoever_made_it(base, volume):
    make_policy(base, allowed_volumes={"shared"}).check_volume(volume, AGENT)


@pytest.mark.parametrize("sub", [".bashrc", ".config/autostart", ".local/bin/ls", ".docker"])
def test_a_homes_hidden_entries_are_refused(policy, base, sub):
    home = base / "home" / "alice"
    entry = home / sub.split("/")[0]
    assert_refused(policy, home / sub, f"it is inside a home's configuration ({entry})")
    policy.check(str(home / "project" / ".git"))  # NOTE: only the home's own dotfiles
