import argparse
import io
import json
import socket
import threading

import pytest

from agentainer.cli import client
from agentainer.cli import commands as cli
from agentainer.cli import output
from agentainer.cli.parser import make_parser
from agentainer.errors import Unauthorized
from agentainer.exit_codes import ExitStatus


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
    "requests": ["web"], "webhooks": ["web"], "health": [], "metrics": ["web"],
    "version": [],
}


def test_every_subcommand_has_a_handler():
    subcommands = next(action for action in make_parser()._actions
                       if isinstance(action, argparse._SubParsersAction)).choices
    assert set(cli.HANDLERS) == set(MINIMAL_ARGS) == set(subcommands)


RAW_OUTPUT = {"logs"}  # NOTE: the container's own bytes; no JSON form to offer


@pytest.mark.parametrize("command", sorted(set(MINIMAL_ARGS) - RAW_OUTPUT))
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_subcommands_accept_json(command, json_flag):
    args = make_parser().parse_args([command, *MINIMAL_ARGS[command], *json_flag])
    assert args.command == command
    assert args.json is bool(json_flag)


@pytest.mark.parametrize("command", sorted(RAW_OUTPUT))
def test_raw_output_commands_do_not_offer_json(command, capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args([command, *MINIMAL_ARGS[command], "--json"])
    assert "unrecognized arguments: --json" in capsys.readouterr().err


@pytest.mark.parametrize("flags, printed", [
    ([], "local-admin-token-0123456789\n"),
    (["--json"], {"token": "local-admin-token-0123456789"}),
    (["--path", "--json"], {"path": "TOKEN_FILE"}),
])
def test_token_json(tmp_path, capsys, monkeypatch, flags, printed):
    (tmp_path / "admin.token").write_text("local-admin-token-0123456789\n")
    monkeypatch.setenv("AGENTAINER_CONFIG", "/dev/null")
    monkeypatch.setenv("AGENTAINER_DATA_DIR", str(tmp_path))
    assert cli.main(["token", *flags], environ={}) == ExitStatus.SUCCESS
    out = capsys.readouterr().out
    if isinstance(printed, dict):
        expected = {k: str(tmp_path / "admin.token") if v == "TOKEN_FILE" else v
                    for k, v in printed.items()}
        assert json.loads(out) == expected
    else:
        assert out == printed


@pytest.mark.parametrize("flags, attribute, value", [
    (["--volume", "a:/a", "-v", "b:/b"], "volume", ["a:/a", "b:/b"]),
    (["--env", "A=1", "-e", "B=2"], "env", ["A=1", "B=2"]),
    (["--cpu", "0.5"], "cpu", "0.5"),
    (["--memory", "512m"], "memory", "512m"),
    (["--auto-restart"], "auto_restart", True),
    (["--token", "t" * 16], "agent_token", "t" * 16),
    (["--manage-token", "m" * 16], "manage_token", "m" * 16),
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
    (["--pull"], "pull", True),
    (["--may-call", "a,b"], "may_call", "a,b"),
    (["--idle-timeout", "5m"], "idle_timeout", "5m"),
    (["--idle-action", "pause"], "idle_action", "pause"),
])
def test_deploy_flags(flags, attribute, value):
    args = make_parser().parse_args(["deploy", *MINIMAL_ARGS["deploy"], *flags])
    assert (args.name, args.image) == ("web", "nginx")
    assert getattr(args, attribute) == value


def test_deploy_token_does_not_clobber_the_api_token():
    args = make_parser().parse_args(
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
        make_parser().parse_args(argv)
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
    output.Output(as_json=False, stdout=stdout).table(
        ("ID", "NAME", "STATUS"),
        [("agent-0123456789ab", "web", "running"), ("agent-ba9876543210", "worker-2", "")])
    assert stdout.getvalue().splitlines() == [
        "ID                  NAME      STATUS",
        "agent-0123456789ab  web       running",
        "agent-ba9876543210  worker-2",
    ]


LOCAL_TOKEN = "local-admin-token-0123456789"


@pytest.fixture
def local_conf(tmp_path) -> dict[str, str]:
    """An environment whose conf puts the local server at 127.0.0.1:8081 with a token file."""
    (tmp_path / "admin.token").write_text(LOCAL_TOKEN + "\n")
    return {"AGENTAINER_CONFIG": "/dev/null", "AGENTAINER_DATA_DIR": str(tmp_path),
            "AGENTAINER_PORT": "8081"}


def server_of(argv: list[str], environ: dict[str, str]) -> tuple[str, str | None]:
    return client.find_server(make_parser().parse_args(argv), environ)


@pytest.mark.parametrize("url", [None, "http://127.0.0.1:8081", "http://localhost:8081/",
                                 "http://127.0.0.2:8081", "http://[::1]:8081"])
def test_local_server_gets_the_local_token(local_conf, url):
    environ = {**local_conf, **({"AGENTAINER_URL": url} if url else {})}
    assert server_of(["list"], environ) == (url or "http://127.0.0.1:8081", LOCAL_TOKEN)


@pytest.mark.parametrize("url", ["https://agents.example.com", "http://10.1.2.3:8081",
                                 "http://127.0.0.1:9000", "http://agents.example.com:8081",
                                 "http://127.0.0.1:notaport", "http://evil\\@127.0.0.1:8081",
                                 "http://[::1]:notaport"])
@pytest.mark.parametrize("via", ["flag", "env"])
def test_other_servers_never_get_the_local_token(local_conf, url, via):
    """APPSEC: the local admin token must not leak to a server the user merely points at."""
    argv, environ = ((["--url", url, "list"], local_conf) if via == "flag"
                     else (["list"], {**local_conf, "AGENTAINER_URL": url}))
    with pytest.raises(Unauthorized, match="set AGENTAINER_TOKEN or --token") as caught:
        server_of(argv, environ)
    assert caught.value.code == "token_required"
    assert LOCAL_TOKEN not in caught.value.message


def test_other_servers_get_the_given_token(local_conf):
    url = "https://agents.example.com"
    assert server_of(["--url", url, "--token", "theirs", "list"], local_conf) == (url, "theirs")
    assert server_of(["list"], {**local_conf, "AGENTAINER_URL": url,
                                "AGENTAINER_TOKEN": "theirs"}) == (url, "theirs")


def test_tokenless_commands_reach_other_servers_without_a_token(local_conf):
    url = "https://agents.example.com"
    assert server_of(["--url", url, "version"], local_conf) == (url, None)


def test_remote_without_token_exits_5_before_sending_anything(local_conf, capsys):
    status = cli.main(["--url", "http://10.1.2.3:8081", "list"], environ=local_conf)
    assert status == ExitStatus.AUTH
    err = capsys.readouterr().err
    assert "not the local server" in err and "[token_required]" in err


def serve_once(reply: bytes) -> str:
    """Answer one HTTP request on loopback with ``reply``, then drop the connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(reply)

    threading.Thread(target=answer, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_logs_cut_off_mid_stream_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # NOTE: a proxy would answer instead
    url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n6\r\nhello\n\r\n40\r\npart")
    status = cli.main(["--url", url, "--token", "x", "logs", "web", "--follow"], environ={})
    assert status == ExitStatus.UNAVAILABLE
    captured = capsys.readouterr()
    assert captured.out.startswith("hello\n")
    assert "the stream from" in captured.err and "[stream_interrupted]" in captured.err
    assert "Traceback" not in captured.err


def test_idle_action_is_stop_or_pause(capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args(["deploy", *MINIMAL_ARGS["deploy"], "--idle-action", "nap"])
    assert "invalid choice" in capsys.readouterr().err
