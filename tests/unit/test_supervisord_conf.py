"""supervisord.conf parses, and runs the programs the stack needs."""

from pathlib import Path

from supervisor.options import ServerOptions

CONF = Path(__file__).resolve().parents[2] / "supervisord.conf"


def test_supervisord_conf_defines_the_stack(tmp_path, monkeypatch):
    # NOTE: a home of its own: on a new machine ~/.agentainer/logs does not exist yet
    (tmp_path / ".agentainer" / "logs").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    options = ServerOptions()
    options.realize(args=["-c", str(CONF)])
    groups = {group.name: group for group in options.process_group_configs}
    assert set(groups) == {"redis", "server", "worker", "monitor"}
    assert [p.name for p in groups["server"].process_configs] == ["server-0", "server-1"]
    assert [p.name for p in groups["worker"].process_configs] == ["worker-0", "worker-1"]
    assert "agentainer-redis" in groups["redis"].process_configs[0].command
    worker = groups["worker"].process_configs[0]
    assert worker.stopsignal == 15 and worker.stopwaitsecs > 300  # warm shutdown, > read_timeout
    assert all(p.autorestart for g in groups.values() for p in g.process_configs)
