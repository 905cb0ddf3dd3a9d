"""Which host paths and named volumes an agent may mount.

APPSEC: the server drives Docker, which mounts as root: a bind of ``/etc``, of a home's
``.ssh``, of Docker's own data or of the Docker socket is root on the host. Every check here
runs at deploy and again before every container start.
"""

import os
import pwd
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentainer.errors import MountRefused

# NOTE: refused with everything below them and every directory above them ("/" aside).
SYSTEM_PATHS = (
    Path("/etc"), Path("/proc"), Path("/sys"), Path("/dev"), Path("/boot"),
    Path("/run"), Path("/var/run"),
)
# NOTE: the checkout, or the directory the package is installed into
INSTALL_DIR = Path(__file__).resolve().parent.parent.parent
HOMES = Path("/home")


@dataclass(frozen=True)
class VolumeInfo:
    """A named volume as Docker describes it."""

    name: str
    owner: str  # the agent ID Agentainer created it for; "" when Agentainer did not
    driver: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MountSpec:
    """One mount of an agent's container, as the runtime is to make it (or holds it)."""

    kind: Literal["bind", "volume"]  # bind: source is a resolved host path; volume: a name
    source: str
    target: str         # the path inside the container
    read_only: bool = False


def system_homes() -> set[Path]:
    """Return every home directory: the password database's, each one under /home, and
    this process's ``$HOME``."""
    homes = {Path(entry.pw_dir) for entry in pwd.getpwall() if entry.pw_dir.startswith("/")}
    homes.add(Path.home())
    try:
        homes.update(path for path in HOMES.iterdir() if path.is_dir())
    except OSError:
        pass  # NOTE: no /home on this host
    return homes


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _hidden_entry(path: Path, home: Path) -> Path | None:
    """Return the hidden entry of ``home`` that ``path`` is or lies in, if any."""
    if home not in path.parents:
        return None
    entry = home / path.relative_to(home).parts[0]
    return entry if entry.name.startswith(".") else None


def _binds_host_path(options: dict[str, str]) -> bool:
    """Say whether a ``local`` volume's options mount a host path (or a host device)."""
    return "bind" in options.get("o", "") or options.get("device", "").startswith("/")


class MountPolicy:
    """Decides whether a bind source or a named volume may be mounted into an agent."""

    def __init__(self, roots: Iterable[Path], data_dir: Path, *,
                 docker_root: Callable[[], Path], allowed_volumes: Iterable[str] = (),
                 install_dir: Path = INSTALL_DIR,
                 homes: Callable[[], Iterable[Path]] = system_homes) -> None:
        """Args:
            roots: ``volume_roots``: a bind source must lie under one of them.
            docker_root: returns Docker's data root (``docker info``), asked when needed.
            allowed_volumes: ``allowed_volumes``: named volumes mounted whoever made them.
        """
        self._roots = tuple(_resolved(root) for root in roots)
        self._fixed = (
            *((_resolved(p), "a system directory") for p in SYSTEM_PATHS),
            (_resolved(data_dir), "Agentainer's data directory"),
            (_resolved(install_dir), "Agentainer's installation directory"),
        )
        self._docker_root = docker_root
        self._allowed_volumes = frozenset(allowed_volumes)
        self._homes = homes

    def _protected(self, homes: Iterable[Path]) -> Iterable[tuple[Path, str]]:
        yield from self._fixed
        yield _resolved(self._docker_root()), "Docker's data root"
        for home in homes:
            yield home / ".ssh", "an SSH directory"

    def check(self, host_path: str) -> Path:
        """Return the bind source with every symlink resolved, or refuse it.

        Refused: ``/``; a path that is, contains or lies inside a protected path (system
        directories, the data and installation directories, Docker's data root, any
        home's ``.ssh``); a home's hidden entry or anything in one (``~/.bashrc``,
        ``~/.config``); a socket or a device file; a path outside ``volume_roots``.
        A path that does not exist (yet) is judged by where it would be created.

        Raises:
            MountRefused: why, naming the path and what it resolves to.
        """
        path = _resolved(Path(host_path))
        shown = repr(host_path) + (f" (resolved: {path})" if str(path) != host_path else "")
        reason = self._refusal(path)
        if reason:
            raise MountRefused(f"host path {shown} may not be mounted into an agent: {reason}")
        if not any(path == root or root in path.parents for root in self._roots):
            roots = ", ".join(str(root) for root in self._roots) or "(none)"
            raise MountRefused(f"host path {shown} is outside the allowed volume roots "
                               f"({roots}); set volume_roots to allow it")
        return path

    def _refusal(self, path: Path) -> str:
        """Return why the resolved path may not be mounted, or ""."""
        if path == Path("/"):
            return "it is the host's root directory"
        if ".ssh" in path.parts:
            return "it is inside an SSH directory"
        homes = [_resolved(home) for home in self._homes()]
        for home in homes:
            entry = _hidden_entry(path, home)
            if entry is not None:
                # APPSEC: a home's dotfiles run as its user: ~/.bashrc, ~/.profile,
                # ~/.config/autostart, ~/.local/bin; ~/.docker and others hold credentials
                return f"it is inside a home's configuration ({entry})"
        for protected, what in self._protected(homes):
            if path == protected or protected in path.parents:
                return f"it is inside {what} ({protected})"
            if path in protected.parents:
                return f"it contains {what} ({protected})"
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return ""  # NOTE: created as a directory when the container is created
        except OSError as ex:
            return f"it cannot be inspected ({ex.strerror})"
        if stat.S_ISSOCK(mode):
            return "it is a socket"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            return "it is a device file"
        return ""

    def check_volume(self, volume: VolumeInfo, agent_id: str) -> None:
        """Refuse a named volume Agentainer did not create for this agent, or one whose
        driver options mount a host path, unless ``allowed_volumes`` lists it.

        Raises:
            MountRefused: why, and how to allow it.
        """
        if volume.name in self._allowed_volumes:
            return
        hint = "remove it or list it in allowed_volumes"
        if volume.owner != agent_id:
            maker = f"agent {volume.owner}" if volume.owner else "someone else"
            raise MountRefused(f"volume {volume.name!r} was created by {maker}, not by "
                               f"Agentainer for this agent; {hint} to mount it")
        if volume.driver != "local":
            raise MountRefused(f"volume {volume.name!r} uses driver {volume.driver!r}, which "
                               f"may mount anything (Agentainer makes local volumes); {hint}")
        if _binds_host_path(volume.options):
            options = ",".join(f"{k}={v}" for k, v in sorted(volume.options.items()))
            raise MountRefused(f"volume {volume.name!r} mounts a host path (options "
                               f"{options}); {hint}")
