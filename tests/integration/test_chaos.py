"""The chaos harness, short: 150 requests, one kill of each of the seven targets, seed 7.

Runs ``python -m bench.chaos`` (its own supervisord stack, cleaned up by the harness) once
for the module, then checks each target on its own, so a miss names itself.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--requests", "150", "--kills", "1", "--seed", "7", "--rate", "6",
        "--retry-for", "20", "--settle", "45", "--report-only", "--no-readme"]
TIMEOUT = 170  # seconds; the harness bounds itself to well under this
CLEANUP = 90   # seconds the harness gets to clean up when it is stopped


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the harness once; return its figures and verdicts."""
    out = tmp_path_factory.mktemp("chaos") / "chaos.json"
    harness = subprocess.Popen([sys.executable, "-m", "bench.chaos", *ARGS, "--json", str(out)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True)
    try:
        stdout, stderr = harness.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        # NOTE: SIGTERM, so the harness still shuts its supervisord down and cleans up
        harness.terminate()
        stdout, stderr = harness.communicate(timeout=CLEANUP)
        pytest.fail(f"the harness took over {TIMEOUT} s:\n{stdout}\n{stderr[-3000:]}")
    assert harness.returncode == 0, f"the harness failed:\n{stdout}\n{stderr[-3000:]}"
    return json.loads(out.read_text())


def verdict(chaos: dict, name: str) -> bool:
    return next(v["met"] for v in chaos["verdicts"] if v["name"] == name)


def test_every_kill_was_carried_out(chaos):
    figures = chaos["figures"]
    assert not figures["kills_missed"], figures["kills_missed"]
    assert len(figures["recoveries"]) == 7


def test_no_acknowledged_request_is_lost(chaos):
    figures = chaos["figures"]
    assert figures["acknowledged"] > 0
    assert verdict(chaos, "lost"), figures["lost"]


def test_a_keyed_retry_never_delivers_twice(chaos):
    assert verdict(chaos, "delivered twice because of a keyed retry"), \
        chaos["figures"]["twice_keyed"]


def test_redeliveries_are_bounded_by_what_was_in_flight(chaos):
    figures = chaos["figures"]
    assert verdict(chaos, "redelivered after a crash"), (
        f"{figures['redelivered']} redelivered, {figures['in_flight_at_kills']} in flight at "
        f"the kills; not in flight at any: {figures['unexplained_redeliveries']}")


def test_nothing_is_refused(chaos):
    figures = chaos["figures"]
    assert verdict(chaos, "refused"), (
        f"{figures['refusals']} 5xx refusals to {figures['refused_requests']} requests: "
        f"{figures['refused_with']}")


def test_recovery_takes_at_most_10_s_after_every_kill(chaos):
    slow = {r["target"]: r["seconds"] for r in chaos["figures"]["recoveries"]
            if r["seconds"] is None or r["seconds"] > 10}
    assert verdict(chaos, "recovery"), f"kill -> next completed delivery: {slow}"


def test_what_a_kill_caught_finishes_within_10_s(chaos):
    slow = {r["target"]: r["settled"] for r in chaos["figures"]["recoveries"]
            if r["settled"] is None or r["settled"] > 10}
    assert verdict(chaos, "caught requests finished"), \
        f"kill -> the last request it caught finished: {slow}"
