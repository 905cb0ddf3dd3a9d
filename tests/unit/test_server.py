"""agentainer-server refuses bad settings at start; the proxy cap keeps threads for the API."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentainer.api.app import ProxyCap
from agentainer.programs import server

SERVER = Path(__file__).resolve().parents[2] / "bin" / "agentainer-server"


def start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAINER_")}
    return subprocess.run([sys.executable, str(SERVER), *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=30)


def test_bad_env_value_is_named(tmp_path):
    result = start({"AGENTAINER_CONFIG": "/dev/null", "AGENTAINER_PORT": "eighty"})
    assert result.returncode == 7
    assert "AGENTAINER_PORT" in result.stderr and "port" in result.stderr
    assert "'eighty'" in result.stderr


def test_bad_file_value_names_file_and_key(tmp_path):
    conf = tmp_path / "agentainer.conf"
    conf.write_text("[agentainer]\nstop_timeout = soon\n")
    result = start({"AGENTAINER_CONFIG": str(conf)})
    assert result.returncode == 7
    assert str(conf) in result.stderr and "stop_timeout" in result.stderr
    assert "'soon'" in result.stderr


def test_unknown_key_is_refused(tmp_path):
    conf = tmp_path / "agentainer.conf"
    conf.write_text("[agentainer]\nprot = 8081\n")
    result = start({"AGENTAINER_CONFIG": str(conf)})
    assert result.returncode == 7 and "'prot'" in result.stderr


def test_bad_flag_value(tmp_path):
    result = start({"AGENTAINER_CONFIG": "/dev/null"}, "--threads", "0")
    assert result.returncode == 7 and "--threads" in result.stderr


def test_api_threads_must_leave_threads_for_the_proxy():
    result = start({"AGENTAINER_CONFIG": "/dev/null", "AGENTAINER_THREADS": "16"})
    assert result.returncode == 7
    assert "api_threads = 16" in result.stderr and "threads = 16" in result.stderr


def test_follow_limit_must_leave_api_threads_for_the_rest_of_the_api():
    result = start({"AGENTAINER_CONFIG": "/dev/null", "AGENTAINER_FOLLOW_LIMIT": "16"})
    assert result.returncode == 7
    assert "follow_limit = 16" in result.stderr and "api_threads = 16" in result.stderr


@pytest.mark.parametrize("setting", ["token_file", "redis_password_file"])
def test_a_secret_file_named_for_an_external_redis_must_exist(tmp_path, setting):
    missing = tmp_path / "secrets" / setting
    result = start({"AGENTAINER_CONFIG": "/dev/null", "AGENTAINER_DATA_DIR": str(tmp_path),
                    "AGENTAINER_EMBEDDED_REDIS": "false",
                    "AGENTAINER_REDIS_URL": "redis://redis.invalid:6379/0",
                    f"AGENTAINER_{setting.upper()}": str(missing)})
    assert result.returncode == 7
    assert f"{setting} = {missing}" in result.stderr and "No such file" in result.stderr
    assert not missing.parent.exists()


class StreamingApp:
    """A WSGI app whose responses stay open until closed."""

    def __init__(self) -> None:
        self.closed = 0

    def __call__(self, environ: dict, start_response) -> "StreamingApp.Body":
        if environ["PATH_INFO"] == "/agent/boom/":
            raise RuntimeError("boom")
        start_response("200 OK", [])
        return self.Body(self)

    class Body:
        def __init__(self, app: "StreamingApp") -> None:
            self.app = app

        def __iter__(self):
            yield b"chunk"

        def close(self) -> None:
            self.app.closed += 1


def call(app, path: str) -> tuple[str, dict, object]:
    seen = {}

    def start_response(status, headers):
        seen.update(status=status, headers=dict(headers))

    body = app({"PATH_INFO": path}, start_response)
    return seen["status"], seen["headers"], body


def test_proxy_cap_answers_503_past_its_limit_and_frees_slots_on_close():
    inner = StreamingApp()
    app = ProxyCap(inner, 2)
    held = [call(app, f"/agent/a/{n}")[2] for n in range(2)]
    status, headers, body = call(app, "/agent/a/3")
    assert status.startswith("503") and headers["Retry-After"]
    assert headers["X-Agentainer-Request-Id"].startswith("req-")
    assert json.loads(b"".join(body))["error"] == "proxy_busy"
    assert call(app, "/agents")[0] == "200 OK"            # the API is never capped
    assert list(held[0]) == [b"chunk"]
    held[0].close()
    assert inner.closed == 1
    assert call(app, "/agent/a/4")[0] == "200 OK"


def test_proxy_cap_frees_the_slot_when_the_app_raises():
    app = ProxyCap(StreamingApp(), 1)
    with pytest.raises(RuntimeError):
        call(app, "/agent/boom/")
    assert call(app, "/agent/a/")[0] == "200 OK"


def test_the_open_file_limit_is_raised_to_the_hard_limit(monkeypatch, caplog):
    limits = {"now": (1024, 8192)}
    monkeypatch.setattr(server.resource, "getrlimit", lambda which: limits["now"])
    monkeypatch.setattr(server.resource, "setrlimit",
                        lambda which, value: limits.update(now=value))
    assert server.raise_open_files(4000) == 8192 and limits["now"] == (8192, 8192)
    assert server.raise_open_files(10000) == 8192 and "fewer than the 10000" in caplog.text
