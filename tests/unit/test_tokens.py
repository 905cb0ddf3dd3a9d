import multiprocessing
import stat
from pathlib import Path

import pytest

from agentainer import secretfile, tokens
from agentainer.errors import InvalidConfig


def test_configured_token_wins_and_no_file_is_written(tmp_path):
    path = tmp_path / "admin.token"
    assert tokens.load_or_create("configured-token", path) == "configured-token"
    assert not path.exists()


def test_generated_once_private_and_reused(tmp_path):
    path = tmp_path / "data" / "admin.token"
    token = tokens.load_or_create("", path)
    assert len(token) >= secretfile.MIN_LENGTH
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tokens.load_or_create("", path) == token
    assert [p.name for p in path.parent.iterdir()] == ["admin.token"]  # no temporary left


@pytest.mark.parametrize("content", ["", "\n", "short\n"])
def test_empty_or_short_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "admin.token"
    path.write_text(content)
    with pytest.raises(InvalidConfig, match="delete it to have a new token generated"):
        tokens.load_or_create("", path)


def _load(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        results.put(tokens.load_or_create("", Path(path)))
    except InvalidConfig as ex:
        results.put(f"error: {ex}")


def test_processes_starting_together_agree_on_one_token(tmp_path):
    """supervisord starts the server processes at the same moment: none may read ''."""
    context = multiprocessing.get_context("fork")
    for attempt in range(20):
        path = tmp_path / str(attempt) / "admin.token"
        barrier, results = context.Barrier(3), context.Queue()
        processes = [context.Process(target=_load, args=(str(path), barrier, results))
                     for _ in range(3)]
        for process in processes:
            process.start()
        seen = [results.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        assert len(set(seen)) == 1, seen
        assert seen[0] == path.read_text().strip() and len(seen[0]) >= secretfile.MIN_LENGTH


def test_read_gives_none_without_a_file_and_refuses_a_short_one(tmp_path):
    path = tmp_path / "admin.token"
    assert tokens.read(path) is None
    path.write_text("short\n")
    with pytest.raises(InvalidConfig, match="at least"):
        tokens.read(path)
    path.write_text("x" * secretfile.MIN_LENGTH + "\n")
    assert tokens.read(path) == "x" * secretfile.MIN_LENGTH


def test_a_token_file_not_generated_must_exist_and_hold_a_token(tmp_path):
    path = tmp_path / "secrets" / "admin_token"
    with pytest.raises(InvalidConfig, match=f"token_file = {path}: .*No such file"):
        tokens.load_or_create("", path, generate=False)
    assert not path.parent.exists()
    path.parent.mkdir()
    path.write_text("short\n")
    with pytest.raises(InvalidConfig, match="token_file = .* holds 5 characters .*at least"):
        tokens.load_or_create("", path, generate=False)
    path.write_text("t" * secretfile.MIN_LENGTH + "\n")
    assert tokens.load_or_create("", path, generate=False) == "t" * secretfile.MIN_LENGTH
    assert tokens.load_or_create("configured-token", path, generate=False) == "configured-token"
