"""No mount makes an agent root on the host: each test is one attempt through the API.

The session's server allows bind mounts under its ``volume_root`` only; the protected-path
rules run first, so each refusal names the rule that caught it, not merely the allow-list.
"""

import os
import secrets
import socket
import stat
from pathlib import Path

import docker
import pytest

from tests.stack import ECHO_IMAGE, Api, Stack, listed_volume


def bind(host_path: Path | str) -> list[dict]:
    return [{"host_path": str(host_path), "container_path": "/mnt/host"}]


def assert_deploy_refused(api: Api, name: str, docker_client, volumes: list[dict],
                          reason: str) -> str:
    """Deploy is refused with 403 volume_refused naming ``reason``, and leaves nothing."""
    reply = api.post("/agents", json={"name": name, "image": ECHO_IMAGE, "volumes": volumes})
    assert reply.status_code == 403, reply.text
    body = reply.json()
    assert body["error"] == "volume_refused" and reason in body["message"], body
    assert api.get(f"/agents/{name}").status_code == 404
    assert not docker_client.containers.list(all=True,
                                             filters={"label": f"agentainer.name={name}"})
    return body["message"]


def assert_start_refused(api: Api, name: str, reason: str) -> None:
    """Start is refused with 403 volume_refused, and the reason is kept in last_error."""
    reply = api.post(f"/agents/{name}/start")
    assert reply.status_code == 403, reply.text
    body = reply.json()
    assert body["error"] == "volume_refused" and reason in body["message"], body
    agent = api.get(f"/agents/{name}").json()["data"]
    assert agent["status"] == "created" and reason in agent["last_error"], agent


def never_started(docker_client: docker.DockerClient, agent: dict) -> bool:
    state = docker_client.api.inspect_container(f"agentainer-{agent['id']}")["State"]
    return state["Status"] == "created" and state["StartedAt"].startswith("0001-")


def test_bind_mount_of_home_is_refused(api: Api, name: str, docker_client):
    home = os.path.expanduser("~")  # NOTE: the server's, which holds its .ssh
    assert_deploy_refused(api, name, docker_client, bind(home),
                          f"it contains an SSH directory ({home}/.ssh)")


def test_bind_mount_of_a_shell_startup_file_in_home_is_refused(api: Api, name: str,
                                                               docker_client):
    """An agent writing to ~/.bashrc (or ~/.profile, ~/.config/autostart) runs code as the
    home's user at its next login: root's, with /root among the default volume_roots."""
    home = os.path.expanduser("~")
    for entry in (".bashrc", ".config/autostart"):
        assert_deploy_refused(api, name, docker_client, bind(f"{home}/{entry}"),
                              f"it is inside a home's configuration ({home}/"
                              f"{entry.split('/')[0]})")


def test_bind_mount_of_data_dir_parent_is_refused(api: Api, name: str, stack: Stack,
                                                  docker_client):
    assert_deploy_refused(api, name, docker_client, bind(stack.data_dir.parent),
                          f"it contains Agentainer's data directory ({stack.data_dir})")


def test_bind_mount_of_socket_in_tmp_is_refused(api: Api, name: str, stack: Stack,
                                                docker_client):
    path = stack.volume_root / f"{name}-notes"  # NOTE: nothing in the name says socket
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(path))
        listening.listen()
        assert_deploy_refused(api, name, docker_client, bind(path), "it is a socket")


def test_bind_mount_of_a_device_file_outside_dev_is_refused(api: Api, name: str, stack: Stack,
                                                            docker_client):
    path = stack.volume_root / f"{name}-data"
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # NOTE: /dev/null, by another name
    assert_deploy_refused(api, name, docker_client, bind(path), "it is a device file")


def test_bind_mount_of_a_file_or_a_fifo_is_mounted_not_a_500(api: Api, name: str, stack: Stack,
                                                             docker_client):
    """An existing bind source that is not a directory (`-v ./config.json:/app/config.json`)
    was made a directory of: 500 internal_error."""
    config, fifo = stack.volume_root / f"{name}-config.json", stack.volume_root / f"{name}-fifo"
    config.write_text("{}")
    os.mkfifo(fifo)
    for source in (config, fifo):
        agent = api.deploy(f"{name}-{source.name[-4:]}", volumes=bind(source))
        assert [m["Source"] for m in docker_client.api.inspect_container(
            f"agentainer-{agent['id']}")["Mounts"]] == [str(source)]


def test_bind_mount_of_docker_data_root_is_refused(api: Api, name: str, docker_client):
    root = docker_client.info()["DockerRootDir"]
    assert_deploy_refused(api, name, docker_client, bind(f"{root}/volumes"),
                          f"it is inside Docker's data root ({root})")


def test_symlink_swapped_after_deploy_is_refused_at_start(api: Api, name: str, stack: Stack,
                                                          docker_client):
    target, link = stack.volume_root / f"{name}-dir", stack.volume_root / f"{name}-link"
    target.mkdir()
    link.symlink_to(target)
    agent = api.deploy(name, volumes=bind(link))
    link.unlink()
    link.symlink_to("/etc")
    assert_start_refused(api, name, "(resolved: /etc)")
    assert never_started(docker_client, agent)


def test_bind_source_replaced_by_a_symlink_after_deploy_is_refused_at_start(
        api: Api, name: str, stack: Stack, docker_client):
    source = stack.volume_root / f"{name}-dir"
    agent = api.deploy(name, volumes=bind(source))  # NOTE: Docker holds this very path
    source.rmdir()
    source.symlink_to("/etc")
    assert_start_refused(api, name, "(resolved: /etc)")
    assert never_started(docker_client, agent)


def test_local_volume_with_bind_option_is_refused(api: Api, name: str, stack: Stack,
                                                  docker_client):
    """A volume of the agent's, removed and recreated with its labels but binding /etc."""
    volume = f"{stack.prefix}-{secrets.token_hex(3)}"
    agent = api.deploy(name, volumes=[{"volume": volume, "container_path": "/data"}])
    docker_client.containers.get(f"agentainer-{agent['id']}").remove()
    docker_client.volumes.get(volume).remove()
    docker_client.volumes.create(volume, driver="local", labels={
        "agentainer.managed": "1", "agentainer.id": agent["id"]},
        driver_opts={"type": "none", "o": "bind", "device": "/etc"})
    reply = api.post(f"/agents/{name}/start")
    assert reply.status_code == 403, reply.text
    assert reply.json()["error"] == "volume_refused"
    assert "mounts a host path" in reply.json()["message"] and "device=/etc" in reply.json()[
        "message"]
    assert not docker_client.containers.list(all=True,
                                             filters={"label": f"agentainer.id={agent['id']}"})


def test_foreign_named_volume_is_refused_unless_listed(api: Api, name: str, stack: Stack,
                                                       docker_client):
    foreign, listed = f"{stack.prefix}-{secrets.token_hex(3)}", listed_volume(stack.prefix)
    docker_client.volumes.create(foreign)
    docker_client.volumes.create(listed)
    assert_deploy_refused(api, name, docker_client,
                          [{"volume": foreign, "container_path": "/data"}],
                          "created by someone else, not by Agentainer for this agent")
    api.deploy(name, volumes=[{"volume": listed, "container_path": "/data"}])
    assert api.delete(f"/agents/{name}", params={"volumes": "true"}).json()["data"][
        "kept_volumes"] == [listed]
    docker_client.volumes.get(listed).remove()
