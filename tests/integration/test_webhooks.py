"""Signed webhooks on the real stack: a receiver on loopback checks every delivery.

The stack here has its own Redis, a server, two workers and the monitor, with short webhook
retries. The receiver (http.server on a thread) verifies each delivery's Standard Webhooks
signature and timestamp with the ``standardwebhooks`` package, the reference
implementation: nothing of Agentainer's signing is reused to check it.
"""

import http.server
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis
import standardwebhooks

from agentainer.webhooks.outbox import EventType

from tests.conftest import RedisServer
from tests.helpers import free_port, wait_for
from tests.integration.journal_helpers import started, wait_for_status
from tests.stack import Api, Stack, _clean_docker, make_stack, run_cli

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # NOTE: Standard Webhooks' example secret


@dataclass
class Hook:
    """What the receiver does on one path, and what it received there."""

    secret: str
    down: bool = False       # answer 503 (the receiver is down)
    refused: int = 0         # answers given while down
    events: list[dict] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # signature or timestamp failures


class Receiver:
    """An HTTP receiver on 127.0.0.1: POST /<key> is checked with that hook's secret."""

    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook = receiver.hooks.get(self.path.lstrip("/"))
                if hook is None:
                    return self._answer(404)
                if hook.down:
                    hook.refused += 1
                    return self._answer(503)
                try:
                    event = standardwebhooks.Webhook(hook.secret).verify(
                        body, dict(self.headers.items()))
                except standardwebhooks.WebhookVerificationError as ex:
                    hook.bad.append(str(ex))
                    return self._answer(400)
                hook.ids.append(self.headers["webhook-id"])
                hook.events.append(event)
                self._answer(204)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hook(self, secret: str = SECRET) -> tuple[str, Hook]:
        """Return a new hook's URL and the hook."""
        key = secrets.token_hex(4)
        self.hooks[key] = Hook(secret)
        return f"http://127.0.0.1:{self.server.server_address[1]}/{key}", self.hooks[key]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class WebhookStack:
    stack: Stack
    api: Api
    redis: redis.Redis
    receiver: Receiver


@pytest.fixture(scope="module")
def hooks(docker_client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookStack]:
    """A stack with the monitor, retrying webhooks fast, on a Redis of its own."""
    own = RedisServer(tmp_path_factory.mktemp("webhook-redis"))
    own.start()
    prefix = f"aghook{secrets.token_hex(3)}"
    stack = make_stack(own.url, tmp_path_factory.mktemp("webhook-data"),
                       tmp_path_factory.mktemp("webhook-volumes"), prefix,
                       AGENTAINER_WEBHOOK_ATTEMPTS="30", AGENTAINER_WEBHOOK_RETRY_BASE="200ms",
                       AGENTAINER_WEBHOOK_RETRY_CAP="1s", AGENTAINER_WEBHOOK_TIMEOUT="2s",
                       AGENTAINER_RESTART_BASE="500ms", AGENTAINER_RECONCILE_INTERVAL="2s")
    receiver = Receiver()
    monitor = None
    try:
        stack.start_server()
        stack.start_workers()
        monitor = stack._spawn("agentainer-monitor", "monitor.log")
        yield WebhookStack(stack, Api(stack.url, stack.token), redis.Redis.from_url(own.url),
                           receiver)
    finally:
        if monitor is not None:
            monitor.terminate()
            monitor.wait(timeout=30)
        stack.stop_all()
        receiver.close()
        _clean_docker(docker_client, prefix, own.url)
        own.stop()


def _name(hooks: WebhookStack) -> str:
    return f"{hooks.stack.prefix}-{secrets.token_hex(3)}"


def _events(hook: Hook, kind: EventType, timeout: float = 60, count: int = 1) -> list[dict]:
    return wait_for(lambda: len(found := [e for e in hook.events if e["type"] == kind]) >= count
                    and found, timeout=timeout, interval=0.2, message=f"{count} {kind} event(s)")


def _deliveries(api: Api, name: str) -> list[dict]:
    reply = api.get(f"/agents/{name}/webhooks")
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]["deliveries"]


def test_a_completed_request_is_delivered_signed_and_its_outcome_is_listed(hooks: WebhookStack):
    api, name = hooks.api, _name(hooks)
    url, hook = hooks.receiver.hook(secret="")
    agent = api.deploy(name, webhook=url)
    # NOTE: the generated secret is in the deploy's answer, once
    hook.secret = agent["webhook_secret"]
    assert hook.secret.startswith("whsec_")
    shown = api.get(f"/agents/{name}").json()["data"]
    assert shown["webhook"] == url and "webhook_secret" not in shown
    assert hook.secret not in api.get("/agents").text
    assert api.post(f"/agents/{name}/start").status_code == 200
    wait_for(lambda: api.session.get(f"{api.url}/agent/{name}/health", timeout=5).status_code
             == 200, timeout=30, message=f"{name} to answer")
    reply = api.session.post(f"{api.url}/agent/{name}/work", data=b"hello", timeout=30)
    assert reply.status_code == 200, reply.text
    request_id = reply.headers["X-Agentainer-Request-Id"]
    event = wait_for(lambda: next((e for e in hook.events
                                   if e["type"] == EventType.REQUEST_COMPLETED
                                   and e["data"]["request_id"] == request_id), None),
                     timeout=60, interval=0.2, message="the request's request.completed")
    assert event["data"] == {"agent_id": agent["id"], "agent_name": name,
                             "request_id": request_id, "status": "completed", "attempts": 1,
                             "response_status": 200}
    assert event["timestamp"].endswith("Z")
    assert hook.bad == []
    delivered = wait_for(lambda: next((d for d in _deliveries(api, name)
                                       if d["data"].get("request_id") == request_id
                                       and d["status"] == "delivered"), None),
                         timeout=10, message="the delivery's outcome")
    assert delivered["attempts"] == 1 and delivered["last_status"] == 204
    assert delivered["id"] in hook.ids
    cli = run_cli(hooks.stack, "webhooks", name)
    assert cli.returncode == 0, cli.stderr
    assert delivered["id"] in cli.stdout and "delivered" in cli.stdout
    as_json = json.loads(run_cli(hooks.stack, "webhooks", name, "--json").stdout)
    assert delivered["id"] in {d["id"] for d in as_json["deliveries"]}


def test_a_receiver_that_is_down_gets_the_event_once_it_is_back(hooks: WebhookStack):
    api, name = hooks.api, _name(hooks)
    url, hook = hooks.receiver.hook()
    started(api, name, webhook=url, webhook_secret=SECRET)
    hook.down = True
    reply = api.session.post(f"{api.url}/agent/{name}/late", data=b"x", timeout=30)
    request_id = reply.headers["X-Agentainer-Request-Id"]
    pending = wait_for(lambda: next((d for d in _deliveries(api, name)
                                     if d["data"].get("request_id") == request_id
                                     and d["attempts"] >= 2), None),
                       timeout=30, message="two refused attempts")
    assert pending["status"] == "pending" and hook.refused >= 2
    assert pending["last_status"] == 503 and pending["next_at"]
    hook.down = False
    wait_for(lambda: any(e["data"].get("request_id") == request_id for e in hook.events),
             timeout=30, message="the event, once the receiver is back")
    done = wait_for(lambda: next((d for d in _deliveries(api, name)
                                  if d["data"].get("request_id") == request_id
                                  and d["status"] == "delivered"), None),
                    timeout=10, message="delivered")
    assert done["attempts"] > 2 and done["last_status"] == 204
    # NOTE: the same webhook-id on every attempt: one event, however many tries
    assert hook.ids.count(done["id"]) == 1


def test_no_event_is_lost_when_every_worker_is_killed(hooks: WebhookStack):
    """kill -9 of the workers mid-retry, and events that happen while none runs: all are
    delivered, once each, by the workers started after."""
    api, stack, name = hooks.api, hooks.stack, _name(hooks)
    url, hook = hooks.receiver.hook()
    started(api, name, webhook=url, webhook_secret=SECRET)
    hook.down = True
    first = api.session.post(f"{api.url}/agent/{name}/before", data=b"1", timeout=30)
    first_id = first.headers["X-Agentainer-Request-Id"]
    wait_for(lambda: any(d["attempts"] >= 2 for d in _deliveries(api, name)
                         if d["data"].get("request_id") == first_id),
             timeout=30, message="retries of the first event")
    for worker in list(stack.workers):
        stack.kill_worker(worker)
    second = api.session.post(f"{api.url}/agent/{name}/meanwhile", data=b"2", timeout=30)
    assert second.status_code == 200  # NOTE: answered by the running agent, no worker needed
    second_id = second.headers["X-Agentainer-Request-Id"]
    hook.down = False
    stack.start_workers()
    for request_id in (first_id, second_id):
        wait_for(lambda: any(e["data"].get("request_id") == request_id for e in hook.events),
                 timeout=90, message=f"the event of {request_id}")
    delivered = [d for d in _deliveries(api, name)
                 if d["data"].get("request_id") in (first_id, second_id)]
    assert len(delivered) == 2
    for delivery in delivered:
        assert hook.ids.count(delivery["id"]) == 1


def test_a_closed_port_is_retried_and_its_error_shown(hooks: WebhookStack):
    api, name = hooks.api, _name(hooks)
    started(api, name, webhook=f"http://127.0.0.1:{free_port()}/nobody", webhook_secret=SECRET)
    failing = wait_for(lambda: next((d for d in _deliveries(api, name)
                                     if d["attempts"] >= 2), None),
                       timeout=30, message="two failed attempts")
    assert failing["status"] == "pending" and failing["last_status"] is None
    assert "refused" in failing["last_error"].lower() or "connect" in \
        failing["last_error"].lower()


def test_a_request_out_of_attempts_is_request_failed_and_the_crashes_are_events(
        hooks: WebhookStack):
    api, name = hooks.api, _name(hooks)
    url, hook = hooks.receiver.hook()
    agent = started(api, name, webhook=url, webhook_secret=SECRET, auto_restart=True)
    reply = api.session.post(f"{api.url}/agent/{name}/doomed", headers={"X-Echo-Crash": "1"},
                             timeout=30)
    request_id = reply.headers["X-Agentainer-Request-Id"]
    wait_for_status(api, name, request_id, "failed", timeout=120)
    failed = wait_for(lambda: next((e for e in hook.events
                                    if e["type"] == EventType.REQUEST_FAILED
                                    and e["data"]["request_id"] == request_id), None),
                      timeout=30, interval=0.2, message="request.failed")
    assert failed["data"]["status"] == "failed" and failed["data"]["attempts"] == 3
    assert failed["data"]["error"]
    crashed = _events(hook, EventType.AGENT_CRASHED)
    assert crashed[0]["data"]["agent_id"] == agent["id"]
    assert "exited with code 3" in crashed[0]["data"]["reason"]
    assert hook.bad == []


def test_a_killed_container_is_agent_crashed_then_agent_restarted(hooks: WebhookStack,
                                                                  docker_client):
    api, name = hooks.api, _name(hooks)
    url, hook = hooks.receiver.hook()
    agent = started(api, name, webhook=url, webhook_secret=SECRET, auto_restart=True)
    docker_client.containers.get(f"agentainer-{agent['id']}").kill()
    crashed = _events(hook, EventType.AGENT_CRASHED)
    restarted = _events(hook, EventType.AGENT_RESTARTED)
    assert crashed[0]["data"]["auto_restart"] is True
    assert restarted[0]["data"]["agent_id"] == agent["id"]
    assert crashed[0]["timestamp"] <= restarted[0]["timestamp"]
    wait_for(lambda: api.status(name) == "running", timeout=30, message="running again")


def test_removing_the_agent_deletes_its_webhook_data(hooks: WebhookStack):
    api, name = hooks.api, _name(hooks)
    url, hook = hooks.receiver.hook()
    agent = started(api, name, webhook=url, webhook_secret=SECRET)
    _events(hook, EventType.REQUEST_COMPLETED)
    assert hooks.redis.exists(f"agentainer:webhooks:{agent['id']}")
    assert api.delete(f"/agents/{name}").status_code == 200
    assert not hooks.redis.exists(f"agentainer:webhooks:{agent['id']}")
    assert not list(hooks.redis.scan_iter(f"agentainer:webhook:msg_{agent['id']}_*"))


def test_deploy_refuses_bad_webhooks(hooks: WebhookStack):
    api = hooks.api
    for fields in ({"webhook": "ftp://127.0.0.1/x"}, {"webhook": "http://u:p@127.0.0.1/"},
                   {"webhook": "http://127.0.0.1/#x"}, {"webhook_secret": SECRET},
                   {"webhook": "http://127.0.0.1/", "webhook_secret": "whsec_short"},
                   {"webhook": "http://127.0.0.1/" + "a" * 2048}):
        reply = api.post("/agents", json={"name": _name(hooks), "image": "x", **fields})
        assert reply.status_code == 400, (fields, reply.text)
        assert SECRET not in reply.text


def test_an_idle_agent_is_agent_idle_and_a_request_wakes_it_agent_woken(hooks: WebhookStack):
    api, name = hooks.api, _name(hooks)
    url, hook = hooks.receiver.hook()
    started(api, name, webhook=url, webhook_secret=SECRET, idle_timeout="1s",
            idle_action="pause")
    idle = _events(hook, EventType.AGENT_IDLE)[0]
    assert idle["data"]["action"] == "pause"
    reply = api.session.post(f"{api.url}/agent/{name}/wake", data=b"up",
                             headers={"Prefer": "wait=20"}, timeout=30)
    assert reply.status_code == 200, reply.text  # NOTE: held while the agent is unpaused
    assert _events(hook, EventType.AGENT_WOKEN)[0]["data"]["agent_name"] == name
    assert hook.bad == []
