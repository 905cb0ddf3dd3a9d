"""Webhook signatures, the deploy's webhook fields, and the job names a worker runs."""

import base64
import json
import time

import pytest
import redis
import standardwebhooks

from agentainer.agents.spec import Agent, parse_deploy
from agentainer.errors import InvalidInput
from agentainer.journal.replay import DRAIN_JOB, job_class
from agentainer.names import WEBHOOK_SECRET_RE
from agentainer.statuses import AgentStatus, Desired
from agentainer.webhooks import signing
from agentainer.webhooks.delivery import _without_target
from agentainer.webhooks.outbox import DELIVER_JOB, Attempt, iso_time

# NOTE: the Standard Webhooks specification's own example
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID, TIMESTAMP, PAYLOAD = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_matches_the_specifications_example():
    assert signing.signature(SECRET, MSG_ID, TIMESTAMP, PAYLOAD) == EXPECTED


def test_the_reference_implementation_accepts_the_headers():
    body = Attempt("msg_agent-0123456789ab_1-0", 1, "agent-0123456789ab", "agent.crashed",
                   1_700_000_000_000, {"reason": "exited with code 3"}, 0).body("web")
    headers = signing.headers(SECRET, "msg_x", int(time.time()), body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    event = standardwebhooks.Webhook(SECRET).verify(body, headers)
    assert event == {"type": "agent.crashed", "timestamp": "2023-11-14T22:13:20.000Z",
                     "data": {"agent_id": "agent-0123456789ab", "agent_name": "web",
                              "reason": "exited with code 3"}}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(body + b" ", headers)


def test_a_bad_secret_is_not_a_key():
    with pytest.raises(ValueError):
        signing.key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def test_iso_time_is_utc_with_milliseconds():
    assert iso_time(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


def _agent(**fields) -> Agent:
    spec, _ = parse_deploy({"name": "web", "image": "echo", **fields})
    return Agent(id="agent-0123456789ab", spec=spec, status=AgentStatus.CREATED,
                 desired=Desired.STOPPED, container_id=None, created_at="t", updated_at="t")


def test_a_webhook_without_a_secret_gets_one_generated_shown_once():
    agent = _agent(webhook="http://127.0.0.1:9000/hook")
    secret = agent.spec.webhook_secret
    assert secret and WEBHOOK_SECRET_RE.match(secret)
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert agent.deployed()["webhook_secret"] == secret
    public = agent.public()
    assert public["webhook"] == "http://127.0.0.1:9000/hook"
    assert secret not in json.dumps(public)
    assert secret not in repr(agent)
    assert _agent(webhook="http://h/").spec.webhook_secret != secret


def test_a_given_secret_is_kept():
    assert _agent(webhook="https://example.com/h?x=1",
                  webhook_secret=SECRET).spec.webhook_secret == SECRET


def test_no_webhook_means_no_secret():
    agent = _agent()
    assert agent.spec.webhook is None and agent.spec.webhook_secret is None
    assert "webhook_secret" not in agent.deployed()


@pytest.mark.parametrize("fields", [
    {"webhook": "ftp://127.0.0.1/x"}, {"webhook": "http://user:pw@127.0.0.1/"},
    {"webhook": "http://127.0.0.1/#frag"}, {"webhook": "http://127.0.0.1:0/"},
    {"webhook": "http://127.0.0.1:65536/"}, {"webhook": "http://h/a b"},
    {"webhook": "http://h/é"}, {"webhook": "http://h/" + "a" * 2048}, {"webhook": 5},
    {"webhook_secret": SECRET},
    {"webhook": "http://h/", "webhook_secret": "whsec_c2hvcnQ="},
    {"webhook": "http://h/", "webhook_secret": SECRET.removeprefix("whsec_")},
    {"webhook": "http://h/", "webhook_secret": "whsec_!!!!" + "A" * 40},
])
def test_bad_webhook_fields_are_refused(fields):
    with pytest.raises(InvalidInput):
        parse_deploy({"name": "web", "image": "echo", **fields})


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "https://example.com",
                                 "http://[::1]:9/x?y=1", "http://localhost/?a=\"b\"",
                                 "http://a-b.c-d.example:65535/p/q"])
def test_good_webhook_urls_are_accepted(url):
    assert _agent(webhook=url).spec.webhook == url


def test_a_worker_runs_the_named_jobs_and_refuses_any_other():
    jobs = {DRAIN_JOB: lambda *a: "drained", DELIVER_JOB: lambda *a: "delivered"}
    job_type = job_class(jobs)
    connection = redis.Redis()  # NOTE: never connects: no job is saved or fetched
    for name, answer in (("agentainer.journal.replay.drain", "drained"),
                         ("agentainer.webhooks.delivery.deliver", "delivered")):
        job = job_type(id="j1", connection=connection)
        job._func_name = name
        assert job.func() == answer
    job = job_type(id="j2", connection=connection)
    job._func_name = "os.system"
    with pytest.raises(InvalidInput):
        job.func  # noqa: B018 - the property refuses


def test_a_delivery_error_does_not_show_the_urls_path_and_query():
    message = ("HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
               "/hooks/abc?token=s3cret (Caused by NewConnectionError('refused'))")
    shown = _without_target(message, "http://127.0.0.1:9/hooks/abc?token=s3cret")
    assert "s3cret" not in shown and "/hooks" not in shown and "refused" in shown
