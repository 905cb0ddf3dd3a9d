import io

import pytest

from agentainer import cli
from agentainer.status import ExitStatus


@pytest.mark.parametrize("items, env", [
    ([], {}),
    (["A=1"], {"A": "1"}),
    (["OPTS=a=1,b=2"], {"OPTS": "a=1,b=2"}),
    (["LIST=x,y", "EMPTY="], {"LIST": "x,y", "EMPTY": ""}),
    (["A=1", "A=2"], {"A": "2"}),
])
def test_parse_env(items, env):
    assert cli.parse_env(items) == env


@pytest.mark.parametrize("item", ["A", "=1", ""])
def test_parse_env_needs_key_and_equals(item):
    with pytest.raises(ValueError, match="use KEY=VALUE"):
        cli.parse_env([item])


def test_parse_volume_resolves_relative_paths_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cwd = tmp_path.resolve()
    assert cli.parse_volume("./data:/data") == \
        {"container_path": "/data", "read_only": False, "host_path": str(cwd / "data")}
    assert cli.parse_volume("../up:/up")["host_path"] == str(cwd.parent / "up")
    assert cli.parse_volume(".:/app")["host_path"] == str(cwd)


def test_parse_volume_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.parse_volume("~/x:/x")["host_path"] == str(tmp_path / "x")


def test_parse_volume_absolute_path():
    assert cli.parse_volume("/srv/data:/data") == \
        {"container_path": "/data", "read_only": False, "host_path": "/srv/data"}


def test_parse_volume_named_volume():
    assert cli.parse_volume("cache:/data") == \
        {"container_path": "/data", "read_only": False, "volume": "cache"}


@pytest.mark.parametrize("item, read_only", [
    ("cache:/data", False), ("cache:/data:rw", False), ("cache:/data:ro", True),
])
def test_parse_volume_modes(item, read_only):
    assert cli.parse_volume(item)["read_only"] is read_only


@pytest.mark.parametrize("mode", ["RO", "rx", "z", ""])
def test_parse_volume_rejects_other_modes(mode):
    with pytest.raises(ValueError, match=f"not {mode!r}"):
        cli.parse_volume(f"cache:/data:{mode}")


@pytest.mark.parametrize("item", ["cache", "/srv", "a:b:ro:x", ":/data", "cache:", ""])
def test_parse_volume_rejects_wrong_shape(item):
    with pytest.raises(ValueError, match="use SRC:DEST"):
        cli.parse_volume(item)


MINIMAL_ARGS = {
    "deploy": ["--name", "web", "--image", "nginx"],
    "start": ["web"], "stop": ["web"], "restart": ["web"], "pause": ["web"], "resume": ["web"],
    "remove": ["web"], "list": [], "inspect": ["web"], "logs": ["web"], "token": [],
    "requests": ["web"], "health": [], "metrics": ["web"],
    "version": [],
}


def test_every_subcommand_has_a_handler():
    assert set(cli.HANDLERS) == set(MINIMAL_ARGS)


@pytest.mark.parametrize("command", MINIMAL_ARGS)
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_subcommands_accept_json(command, json_flag):
    args = cli.make_parser().parse_args([command, *MINIMAL_ARGS[command], *json_flag])
    assert args.command == command
    assert args.handler is cli.HANDLERS[command]
    assert args.json is bool(json_flag)


@pytest.mark.parametrize("flags, attribute, value", [
    (["--volume", "a:/a", "-v", "b:/b"], "volume", ["a:/a", "b:/b"]),
    (["--env", "A=1", "-e", "B=2"], "env", ["A=1", "B=2"]),
    (["--cpu", "0.5"], "cpu", "0.5"),
    (["--memory", "512m"], "memory", "512m"),
    (["--auto-restart"], "auto_restart", True),
    (["--token", "t" * 16], "agent_token", "t" * 16),
    (["--app-port", "8080"], "app_port", 8080),
    (["--no-egress"], "no_egress", True),
    (["--private"], "private", True),
    (["--start"], "start", True),
    (["--health-endpoint", "/ready"], "health_endpoint", "/ready"),
    (["--health-interval", "10s"], "health_interval", "10s"),
    (["--health-timeout", "2s"], "health_timeout", "2s"),
    (["--health-retries", "5"], "health_retries", 5),
    (["--pids-limit", "100"], "pids_limit", 100),
    (["--no-persist"], "no_persist", True),
])
def test_deploy_flags(flags, attribute, value):
    args = cli.make_parser().parse_args(["deploy", *MINIMAL_ARGS["deploy"], *flags])
    assert (args.name, args.image) == ("web", "nginx")
    assert getattr(args, attribute) == value


def test_deploy_token_does_not_clobber_the_api_token():
    args = cli.make_parser().parse_args(
        ["--token", "admin", "deploy", *MINIMAL_ARGS["deploy"], "--token", "agent"])
    assert (args.token, args.agent_token) == ("admin", "agent")


@pytest.mark.parametrize("argv", [
    ["deploy", "--name", "web", "--image", "nginx", "--memroy", "1g"],
    ["deploy", "--nam", "web", "--image", "nginx"],
    ["deploy", "--image", "nginx"],
    ["list", "--stauts", "running"],
    ["list", "--status", "sleeping"],
    ["stop"],
    ["destroy", "web"],
    [],
])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.make_parser().parse_args(argv)
    assert caught.value.code == ExitStatus.USAGE == 2
    assert "usage:" in capsys.readouterr().err


def test_unreachable_server_exits_6(capsys, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # NOTE: a proxy would answer instead
    status = cli.main(["--url", "http://127.0.0.1:9", "--token", "x", "list"], environ={})
    assert status == ExitStatus.UNAVAILABLE == 6
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot reach the Agentainer server at http://127.0.0.1:9" in captured.err


def test_bad_local_argument_exits_2(capsys):
    status = cli.main(["--url", "http://127.0.0.1:9", "--token", "x",
                       "deploy", "--name", "web", "--image", "nginx", "--env", "NOVALUE"],
                      environ={})
    assert status == ExitStatus.USAGE
    assert "--env 'NOVALUE': use KEY=VALUE" in capsys.readouterr().err


def test_table_aligns_columns():
    stdout = io.StringIO()
    cli.Output(as_json=False, stdout=stdout).table(
        ("ID", "NAME", "STATUS"),
        [("agent-0123456789ab", "web", "running"), ("agent-ba9876543210", "worker-2", "")])
    assert stdout.getvalue().splitlines() == [
        "ID                  NAME      STATUS",
        "agent-0123456789ab  web       running",
        "agent-ba9876543210  worker-2",
    ]
