"""The embedded Redis command line follows the settings; its password stays private."""

import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from agentainer import config, redis_password
from agentainer.errors import InvalidConfig
from agentainer.exit_codes import ExitStatus
from agentainer.programs.redis_server import is_embedded, main, make_private, redis_command, redis_config
from agentainer.wiring import redis_client
from tests.helpers import with_password

ROOT = Path(__file__).resolve().parents[2]


def test_redis_command_follows_the_settings(tmp_path):
    settings = config.load(environ={"AGENTAINER_CONFIG": "/dev/null",
                                    "AGENTAINER_REDIS_URL": "redis://127.0.0.1:7001/0",
                                    "AGENTAINER_APPENDFSYNC": "always",
                                    "AGENTAINER_DATA_DIR": str(tmp_path)})
    command = " ".join(redis_command(settings, "redis-server"))
    assert "--bind 127.0.0.1 --port 7001" in command
    assert "--appendonly yes --appendfsync always" in command
    assert f"--dir {tmp_path}/redis" in command


@pytest.mark.parametrize("url, embedded, expected", [
    ("redis://127.0.0.1:6380/0", "true", True),
    ("redis://localhost:6380/0", "true", True),
    ("redis://redis.internal:6379/0", "true", False),  # another host: external
    ("redis://127.0.0.1:6380/0", "false", False),
    ("rediss://127.0.0.1:6380/0", "true", False),  # TLS: the embedded Redis has none
])
def test_embedded_only_for_a_loopback_url(url, embedded, expected):
    settings = config.load(environ={"AGENTAINER_CONFIG": "/dev/null",
                                    "AGENTAINER_REDIS_URL": url,
                                    "AGENTAINER_EMBEDDED_REDIS": embedded})
    assert is_embedded(settings) is expected


def test_redis_runs_with_maxmemory_above_the_journal_budget(tmp_path):
    settings = config.load(environ={"AGENTAINER_CONFIG": "/dev/null",
                                    "AGENTAINER_REDIS_MAXMEMORY": "3g",
                                    "AGENTAINER_DATA_DIR": str(tmp_path)})
    command = " ".join(redis_command(settings, "redis-server"))
    assert f"--maxmemory {3 << 30} --maxmemory-policy noeviction" in command


def test_a_maxmemory_under_the_budget_is_refused(tmp_path, capsys):
    conf = tmp_path / "agentainer.conf"
    conf.write_text("[agentainer]\nredis_maxmemory = 1g\njournal_max_bytes = 1g\n"
                    f"data_dir = {tmp_path}\n")
    assert main(["--config", str(conf)]) == ExitStatus.CONFIG
    assert "must exceed journal_max_bytes" in capsys.readouterr().err


def _settings(tmp_path, **environ):
    return config.load(environ={"AGENTAINER_CONFIG": "/dev/null",
                                "AGENTAINER_DATA_DIR": str(tmp_path), **environ})


def test_the_password_reaches_redis_on_stdin_not_the_command_line(tmp_path):
    settings = _settings(tmp_path)
    password = redis_password.for_embedded(settings)
    command = redis_command(settings, "redis-server")
    assert command[-1] == "-"  # NOTE: redis-server reads the rest of its config on stdin
    assert password not in " ".join(command) and "requirepass" not in command
    directive, quoted = redis_config(password).strip().split(" ", 1)
    assert directive == "requirepass"
    assert bytes.fromhex(quoted.strip('"').replace("\\x", "")).decode() == password


def test_a_hand_written_password_is_quoted_whole():
    assert redis_config('a "b" \\c') == 'requirepass "' + "".join(
        f"\\x{byte:02x}" for byte in b'a "b" \\c') + '"\n'


def test_the_password_file_is_created_once_and_private(tmp_path):
    settings = _settings(tmp_path / "data")
    password = redis_password.for_settings(settings)
    path = tmp_path / "data" / "redis.password"
    assert path.read_text().strip() == password and len(password) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert redis_password.for_embedded(settings) == password  # read back, not replaced


def _create(data_dir: str, barrier, results) -> None:
    barrier.wait()
    results.put(redis_password.for_embedded(_settings(Path(data_dir))))


def test_programs_starting_together_agree_on_one_password(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(6), context.Queue()
    processes = [context.Process(target=_create, args=(str(tmp_path), barrier, results))
                 for _ in range(6)]
    for process in processes:
        process.start()
    seen = {results.get(timeout=10) for _ in processes}
    for process in processes:
        process.join(timeout=10)
    assert seen == {(tmp_path / "redis.password").read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == ["redis.password"]  # no temporaries left


@pytest.mark.parametrize("url, embedded", [
    ("redis://:in-the-url@127.0.0.1:6380/0", "true"),   # the URL names its password
    ("redis://redis.internal:6379/0", "true"),          # an external Redis
    ("redis://127.0.0.1:6380/0", "false"),
])
def test_no_password_file_when_the_url_says_or_redis_is_external(tmp_path, url, embedded):
    settings = _settings(tmp_path, AGENTAINER_REDIS_URL=url, AGENTAINER_EMBEDDED_REDIS=embedded)
    assert redis_password.for_settings(settings) is None
    assert not (tmp_path / "redis.password").exists()


def test_the_embedded_redis_requires_the_urls_password_when_it_names_one(tmp_path):
    settings = _settings(tmp_path, AGENTAINER_REDIS_URL="redis://:p%40ss@127.0.0.1:6380/0")
    assert redis_password.for_embedded(settings) == "p@ss"


def test_the_client_authenticates_with_the_file_or_the_urls_password(tmp_path):
    password = redis_password.for_embedded(_settings(tmp_path))
    kwargs = redis_client(_settings(tmp_path)).connection_pool.connection_kwargs
    assert kwargs["password"] == password
    external = _settings(tmp_path, AGENTAINER_REDIS_URL="rediss://:s3cret@redis.example:6379/2")
    kwargs = redis_client(external).connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["host"], kwargs["db"]) == ("s3cret", "redis.example", 2)


@pytest.mark.parametrize("url, password, expected", [
    ("redis://127.0.0.1:6380/0", "pw", "redis://:pw@127.0.0.1:6380/0"),
    ("redis://127.0.0.1:6380/0", "a/b:c@d", "redis://:a%2Fb%3Ac%40d@127.0.0.1:6380/0"),
    ("rediss://user@h:1/2", "pw", "rediss://user:pw@h:1/2"),
    ("redis://127.0.0.1:6380/0", None, "redis://127.0.0.1:6380/0"),
])
def test_urls_are_built_with_the_password(url, password, expected):
    built = with_password(url, password)
    assert built == expected
    if password:
        assert redis.connection.parse_url(built)["password"] == password


@pytest.mark.parametrize("url, expected", [
    ("redis://:s3cret@h:1/0", "redis://:***@h:1/0"),
    ("rediss://user:s3c@ret@h:1/0", "rediss://user:***@h:1/0"),
    ("s3cret@h:1", "***@h:1"),
    ("redis://127.0.0.1:6380/0", "redis://127.0.0.1:6380/0"),
])
def test_urls_in_messages_are_redacted(url, expected):
    assert redis_password.redact(url) == expected


def test_a_bad_redis_url_is_named_without_its_password():
    with pytest.raises(InvalidConfig) as caught:
        config.load(environ={"AGENTAINER_CONFIG": "/dev/null",
                             "AGENTAINER_REDIS_URL": "http://:s3cret@h:1/0"})
    assert "s3cret" not in caught.value.message and ":***@h:1/0" in caught.value.message


def test_an_external_redis_is_announced_without_its_password(tmp_path):
    conf = tmp_path / "agentainer.conf"
    conf.write_text("[agentainer]\nredis_url = redis://:s3cret@redis.internal:6379/0\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTAINER_")}
    env["PYTHONPATH"] = str(ROOT)
    idle = subprocess.Popen([sys.executable, str(ROOT / "bin" / "agentainer-redis"),
                             "--config", str(conf)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = idle.stdout.readline()  # NOTE: it idles after this line until TERM
    finally:
        idle.terminate()
        idle.wait(timeout=10)
    assert "s3cret" not in line and "redis://:***@redis.internal:6379/0" in line


def test_an_old_data_dir_is_made_private(tmp_path):
    aof = tmp_path / "redis" / "appendonlydir"
    aof.mkdir(parents=True)
    (aof / "appendonly.aof.1.incr.aof").write_text("")
    for path, mode in ((tmp_path, 0o755), (tmp_path / "redis", 0o755), (aof, 0o755),
                       (aof / "appendonly.aof.1.incr.aof", 0o644)):
        path.chmod(mode)
    make_private(tmp_path)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (tmp_path, tmp_path / "redis", aof)] == \
        [0o700] * 3
    assert stat.S_IMODE((aof / "appendonly.aof.1.incr.aof").stat().st_mode) == 0o600


def test_a_shared_data_dir_is_not_made_private(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(InvalidConfig, match="shared directory"):
        make_private(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_an_empty_url_password_is_no_password(tmp_path):
    settings = _settings(tmp_path, AGENTAINER_REDIS_URL="redis://:@127.0.0.1:6380/0")
    password = redis_password.for_embedded(settings)
    assert password and redis_password.for_settings(settings) == password


@pytest.mark.parametrize("url", ["redis://redis.internal:6379/0", "rediss://127.0.0.1:6380/0"])
def test_an_external_redis_password_file_must_exist_and_is_never_generated(tmp_path, url):
    secret = tmp_path / "secrets" / "redis_password"
    settings = _settings(tmp_path, AGENTAINER_REDIS_URL=url,
                         AGENTAINER_REDIS_PASSWORD_FILE=str(secret))
    with pytest.raises(InvalidConfig, match=f"redis_password_file = {secret}: .*No such file"):
        redis_password.for_settings(settings)
    assert not secret.parent.exists()
    secret.parent.mkdir()
    secret.write_text("\n")
    with pytest.raises(InvalidConfig, match="redis_password_file = .* holds nothing"):
        redis_password.for_settings(settings)
    secret.write_text("short\n")  # NOTE: the external Redis's operator chose it: any length
    assert redis_password.for_settings(settings) == "short"


def test_an_unreadable_password_file_is_named_without_its_contents(tmp_path):
    secret = tmp_path / "redis_password"
    secret.mkdir()  # NOTE: root reads any file; a directory cannot be read as one
    settings = _settings(tmp_path, AGENTAINER_REDIS_URL="redis://redis.internal:6379/0",
                         AGENTAINER_REDIS_PASSWORD_FILE=str(secret))
    with pytest.raises(InvalidConfig, match="redis_password_file = .*: cannot read"):
        redis_password.for_settings(settings)


def test_the_embedded_redis_generates_its_password_into_redis_password_file(tmp_path):
    secret = tmp_path / "elsewhere" / "redis.password"
    settings = _settings(tmp_path, AGENTAINER_REDIS_PASSWORD_FILE=str(secret))
    password = redis_password.for_embedded(settings)
    assert secret.read_text() == password + "\n"
    assert redis_password.for_settings(settings) == password
    assert not (tmp_path / "redis.password").exists()
