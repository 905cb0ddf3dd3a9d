"""The embedded Redis command line follows the settings."""

from agentainer import config
import pytest

from agentainer.embedded import is_embedded, main, redis_command
from agentainer.status import ExitStatus


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
