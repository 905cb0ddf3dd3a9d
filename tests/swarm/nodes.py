"""A second Docker node on this machine, joined to the host's swarm for multi-node tests.

The host's daemon manages a one-node swarm that advertises 198.18.0.1, an address on ``lo``.
``SecondNode`` adds a worker beside it: a second dockerd in a network namespace of its own,
with overlay networking that works across the two nodes in both directions.

Address plan::

    host netns                                 netns agentainer-node2-<pid>
    lo           198.18.0.1/32  (manager)
    an2h-<pid>   198.18.1.1/24  <-- veth -->   an2n-<pid>  198.18.1.2/24  (worker)
    route 198.18.1.2/32 dev an2h-<pid>         default via 198.18.1.1
          src 198.18.0.1                       docker0     172.31.254.1/24 (its own)

The namespace reaches 198.18.0.1 through its default route; to the host that traffic is
local delivery (INPUT, policy ACCEPT here), never forwarded, so the host needs no iptables
rule. The host's FORWARD policy (DROP) stays as it is and keeps the second node off every
other network. Gossip (7946 TCP/UDP) and VXLAN (UDP 4789) flow between 198.18.0.1 and
198.18.1.2; each daemon's VXLAN socket (kernel-owned, ``0.0.0.0:4789``) sits in the network
namespace the daemon runs in, where its overlay ``vxlan0`` devices were created.

The non-obvious steps:

- The daemon is started with ``nsenter --net`` and nothing else: ``ip netns exec`` also
  makes a mount namespace and remounts ``/sys``, which hides ``/sys/fs/cgroup`` (dockerd
  fails with "Devices cgroup isn't mounted").
- Its own ``--exec-root`` also moves its sandboxes (``ingress_sbox``, ``1-<network>``,
  ``lb_<network>``) to ``D/exec/netns``, away from the host daemon's same-named ones in
  ``/var/run/docker/netns``; it starts its own containerd under ``D/exec/containerd``.
- ``--iptables`` stays on: iptables tables belong to a network namespace, so its rules (and
  its NAT for its ``docker0``/``docker_gwbridge``) land in the node's namespace, not the host's.
  ``--bip`` only makes its ``docker0`` easy to tell from the host's in captures.
- THE FIX for cross-node traffic is the host route ``198.18.1.2/32 ... src 198.18.0.1``.
  The overlay's VXLAN socket is unbound, so without it the kernel sends node 1's VXLAN from
  the veth's address, 198.18.1.1. The node-2 ``vxlan0`` has learning on and static
  (permanent) FDB entries naming 198.18.0.1 for node 1's containers; a frame whose outer
  source differs from a static entry is dropped (the kernel's vxlan_snoop,
  ``SKB_DROP_REASON_VXLAN_ENTRY_EXISTS``): node 1's calls time out, their packets seen on
  ``an2n-<pid>`` and never on ``vxlan0``. With the route, node 1 sends from the address it
  advertises and both directions work. (``--data-path-addr`` is not needed: the data path
  uses the advertise address.)
- ``DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1``: a worker otherwise tries the registry before
  each task starts, which here waits ~20 s for a DNS time-out and then uses the local image.
- This kernel has no IPVS (``CONFIG_IP_VS`` unset; dockerd logs "Could not get ipvs family
  information"), so a service's virtual IP answers "No route to host" even on one node.
  Reach services by name with ``--endpoint-mode dnsrr``: the name then resolves to the tasks.
- Both nodes report the same hostname: place tasks by the node label ``agentainer.node=second``
  (``node.labels.agentainer.node==second``) or by ``node_id``, never by hostname.
- rp_filter (0 here) would pass even in strict mode: each side's route back to the sender
  leaves by the interface the packet came in on.
- Its containers run under the cgroup parent ``/agentainer-node2-<pid>``, and its containerd
  and shims name the temp dir on their command lines: that is where ``down()`` finds, and
  kills by PID, whatever a killed daemon leaves behind.

Only one second node at a time: ``up()`` refuses when 198.18.1.1 is already on this host.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

MANAGER_ADDR = "198.18.0.1"
HOST_END = "198.18.1.1"
NODE_ADDR = "198.18.1.2"
LINK_PREFIX = 24
BRIDGE_IP = "172.31.254.1/24"
NODE_LABEL = "agentainer.node=second"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def run(*args: str, stdin: IO[bytes] | None = None, timeout: float = 60, check: bool = True,
        what: str | None = None) -> str:
    """Run a command and return its stripped stdout; raise RuntimeError (naming ``what``, or
    the command) with its stderr when it fails and ``check`` is set."""
    result = subprocess.run(args, stdin=stdin, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{what or ' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode(errors="replace").strip()


def poll(probe: Callable[[], bool], *, timeout: float, what: str,
         interval: float = 0.2) -> None:
    """Call ``probe`` until it returns True; RuntimeError after ``timeout`` seconds. An
    exception from ``probe`` ends the wait at once."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def require_manager() -> None:
    """Raise RuntimeError unless the host's daemon manages a swarm that advertises
    MANAGER_ADDR (the swarm every second node joins)."""
    state = run("docker", "info", "--format",
                "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeAddr}}")
    if state != f"active true {MANAGER_ADDR}":
        raise RuntimeError(f"the host's Docker daemon is not a swarm manager advertising "
                           f"{MANAGER_ADDR} (docker info: {state!r}); a second node has no "
                           "swarm to join")


class SecondNode:
    """A second dockerd in its own network namespace, a worker of the host's swarm.

    ``up()`` builds it, ``down()`` takes all of it away again (idempotent, and safe after a
    partial ``up()``); as a context manager it does both.
    """

    def __init__(self) -> None:
        tag = str(os.getpid())
        self.netns = f"agentainer-node2-{tag}"
        self.host_veth = f"an2h-{tag}"
        self.node_veth = f"an2n-{tag}"
        self.cgroup_parent = f"/agentainer-node2-{tag}"
        self.directory: Path | None = None
        self.node_id: str | None = None
        self._daemon: subprocess.Popen | None = None
        self._made_link = False

    @property
    def docker_host(self) -> str:
        """The second daemon's API, for ``docker -H`` or DOCKER_HOST."""
        return f"unix://{self.directory}/docker.sock"

    @property
    def pid(self) -> int | None:
        """The second dockerd's PID (``nsenter`` execs it, so it is the one in D/docker.pid)."""
        return self._daemon.pid if self._daemon else None

    def docker(self, *args: str, **options: Any) -> str:
        """Run a docker CLI command against the second daemon (options as for ``run``)."""
        return run("docker", "-H", self.docker_host, *args, **options)

    def up(self) -> "SecondNode":
        """Build the node and join it, Ready and labelled; on any failure, ``down()``."""
        require_manager()
        if f" {HOST_END}/" in run("ip", "-o", "-4", "addr", "show"):
            raise RuntimeError(f"{HOST_END} is already on this host: another second node "
                               "is up (only one at a time)")
        try:
            self._link()
            self._start_daemon()
            self._join()
        except BaseException as failure:
            try:
                self.down()
            except Exception as cleanup:  # noqa: BLE001 - the failure of up() comes first
                failure.add_note(f"and the clean-up after it failed too: {cleanup!r}")
            raise
        return self

    def load(self, image: str) -> None:
        """Copy ``image`` from the host's daemon to this node (there is no registry)."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        assert save.stdout is not None  # NOTE: stdout=PIPE
        try:
            self.docker("load", stdin=save.stdout, timeout=300)
        finally:
            save.stdout.close()
            code = save.wait(timeout=60)
        if code != 0:
            raise RuntimeError(f"docker save {image} failed ({code})")

    def down(self) -> None:
        """Take away everything ``up()`` made, step by step; a failing step does not stop
        the later ones, and the first failure is raised at the end."""
        failures = []
        for step in (self._leave, self._stop_daemon, self._kill_leftovers, self._unmount,
                     self._remove_cgroups, self._unlink, self._remove_directory):
            try:
                step()
            except Exception as ex:  # noqa: BLE001 - every step runs; the first is raised
                failures.append(ex)
        if failures:
            raise failures[0]

    def __enter__(self) -> "SecondNode":
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def _link(self) -> None:
        """The namespace, the veth pair and the routes of the address plan."""
        ns = ("ip", "-n", self.netns)
        run("ip", "netns", "add", self.netns)
        run("ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", self.node_veth)
        self._made_link = True
        run("ip", "link", "set", self.node_veth, "netns", self.netns)
        run("ip", "addr", "add", f"{HOST_END}/{LINK_PREFIX}", "dev", self.host_veth)
        run("ip", "link", "set", self.host_veth, "up")
        # NOTE: node 1's VXLAN must leave from the address it advertises (see the docstring)
        run("ip", "route", "add", f"{NODE_ADDR}/32", "dev", self.host_veth, "src", MANAGER_ADDR)
        run(*ns, "addr", "add", f"{NODE_ADDR}/{LINK_PREFIX}", "dev", self.node_veth)
        run(*ns, "link", "set", "lo", "up")
        run(*ns, "link", "set", self.node_veth, "up")
        run(*ns, "route", "add", "default", "via", HOST_END)

    def _start_daemon(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="an2-"))
        d = self.directory
        env = dict(os.environ, DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1")
        with open(d / "dockerd.log", "wb") as log:
            # NOTE: a session of its own: a Ctrl-C to the tests reaches down(), not dockerd
            self._daemon = subprocess.Popen(
                ["nsenter", f"--net=/var/run/netns/{self.netns}", "dockerd",
                 "--data-root", str(d / "root"), "--exec-root", str(d / "exec"),
                 "-H", self.docker_host, "--pidfile", str(d / "docker.pid"),
                 "--bip", BRIDGE_IP, "--cgroup-parent", self.cgroup_parent,
                 "--shutdown-timeout", "5"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)
        poll(self._answers, timeout=60, what="the second dockerd")

    def _answers(self) -> bool:
        code = self._daemon.poll() if self._daemon else None
        if code is not None:
            raise RuntimeError(f"the second dockerd exited ({code}): {self._log_tail()}")
        return subprocess.run(["docker", "-H", self.docker_host, "version"],
                              capture_output=True, timeout=10).returncode == 0

    def _join(self) -> None:
        token = run("docker", "swarm", "join-token", "-q", "worker")
        self.docker("swarm", "join", "--token", token, "--advertise-addr", NODE_ADDR,
                    "--listen-addr", f"{NODE_ADDR}:2377", f"{MANAGER_ADDR}:2377",
                    what="docker swarm join (second node)")
        self.node_id = node_id = self.docker("info", "--format", "{{.Swarm.NodeID}}")
        poll(lambda: run("docker", "node", "inspect", node_id, "--format",
                         "{{.Status.State}}") == "ready",
             timeout=30, what=f"node {node_id} to be Ready")
        run("docker", "node", "update", "--label-add", NODE_LABEL, node_id)

    def _running(self) -> bool:
        return self._daemon is not None and self._daemon.poll() is None

    def _leave(self) -> None:
        if self._running():
            self.docker("swarm", "leave", "--force", check=False, timeout=30)
        if self.node_id:
            run("docker", "node", "rm", "--force", self.node_id, check=False)
            self.node_id = None

    def _stop_daemon(self) -> None:
        if self._daemon is None:
            return
        if self._running():
            self._daemon.send_signal(signal.SIGTERM)
            try:
                self._daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._daemon.kill()
                self._daemon.wait(timeout=10)
        self._daemon = None

    def _leftovers(self) -> set[int]:
        """PIDs a killed daemon may leave: its containerd and shims (their command lines name
        the temp dir) and its containers' processes (in its cgroup parent)."""
        pids = set()
        if self.directory:
            for entry in Path("/proc").iterdir():
                try:
                    if entry.name.isdigit() and f"{self.directory}/".encode() in \
                            (entry / "cmdline").read_bytes():
                        pids.add(int(entry.name))
                except OSError:
                    continue
        for tasks in self._cgroup_dirs():
            for path in tasks.rglob("cgroup.procs"):
                try:
                    pids.update(int(line) for line in path.read_text().split())
                except OSError:  # NOTE: an emptied cgroup may go while it is read
                    continue
        return pids - {os.getpid()}

    def _kill_leftovers(self) -> None:
        for pid in self._leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        poll(lambda: not self._leftovers(), timeout=10, what="the second node's processes")

    def _unmount(self) -> None:
        """Lazily unmount what is still mounted under the temp dir, deepest first (a clean
        daemon stop leaves nothing; a killed one leaves netns and overlay mounts)."""
        if not self.directory:
            return
        base = str(self.directory)
        with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
            points = [line.split()[4].encode().decode("unicode_escape") for line in mounts]
        for point in sorted((p for p in points if p == base or p.startswith(base + "/")),
                            key=len, reverse=True):
            run("umount", "--lazy", point, check=False)

    def _cgroup_dirs(self) -> list[Path]:
        relative = self.cgroup_parent.lstrip("/")
        return [path for path in [CGROUP_ROOT / relative,
                                  *(root / relative for root in CGROUP_ROOT.iterdir())]
                if path.is_dir()]

    def _remove_cgroups(self) -> None:
        for top in self._cgroup_dirs():
            for path in sorted((p for p in top.rglob("*") if p.is_dir()),
                               key=lambda p: len(p.parts), reverse=True):
                path.rmdir()
            top.rmdir()

    def _unlink(self) -> None:
        if self._made_link:
            run("ip", "link", "del", self.host_veth, check=False)
            self._made_link = False
        if os.path.exists(f"/var/run/netns/{self.netns}"):
            run("ip", "netns", "del", self.netns)

    def _remove_directory(self) -> None:
        if self.directory:
            shutil.rmtree(self.directory)
            self.directory = None

    def _log_tail(self, lines: int = 15) -> str:
        if not self.directory:
            return ""
        log = self.directory / "dockerd.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
