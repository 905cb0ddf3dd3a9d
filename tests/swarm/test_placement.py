"""An agent placed on a second node by a constraint: reached through the proxy on the
first node (the overlay between them), restarted and replayed after its task is killed."""

import time

from tests.swarm.conftest import Api, running_tasks, service_of, task_container, wait_for
from tests.swarm.nodes import SecondNode

ON_SECOND = "node.labels.agentainer.node==second"


def test_an_agent_on_the_second_node_is_proxied_and_replayed_after_a_kill(api: Api,
                                                                          agents: list[str]):
    with SecondNode() as node:
        node.load("agentainer/echo-agent:latest")
        agent = api.deploy(constraints=[ON_SECOND], auto_restart=True, hold="0s", start=True)
        agents.append(agent["id"])
        assert service_of(agent["id"])["Spec"]["TaskTemplate"]["Placement"][
            "Constraints"] == [ON_SECOND]
        [task] = wait_for(lambda: running_tasks(agent["id"]), timeout=60, what="a task")
        container, on = task_container(task)
        assert on == node.node_id
        reply = wait_for(lambda: (r := api.session.post(
            f"{api.url}/agent/{agent['id']}/across", data=b"over", timeout=30)).status_code
            == 200 and r, timeout=60, what="an answer from the second node")
        assert reply.json()["body"] == "over"

        node.docker("kill", container)
        wait_for(lambda: api.agent(agent["id"])["status"] != "running", timeout=30,
                 what="the monitor to see the task die")
        queued = api.session.post(f"{api.url}/agent/{agent['id']}/while-down",
                                  data=b"later", timeout=30)
        assert queued.status_code in (200, 202), queued.text
        request_id = queued.headers["X-Agentainer-Request-Id"]
        wait_for(lambda: [t for t in running_tasks(agent["id"]) if t != task], timeout=90,
                 what="Agentainer to restart the agent on the second node")
        record = wait_for(lambda: (r := api.get(
            f"/agents/{agent['id']}/requests/{request_id}").json()["data"])["status"]
            == "completed" and r, timeout=90, what="the queued request to be replayed")
        assert record["status"] == "completed"
        [again] = running_tasks(agent["id"])
        assert task_container(again)[1] == node.node_id
        api.delete(f"/agents/{agent['id']}")
        agents.remove(agent["id"])
        time.sleep(1)  # NOTE: the task's container goes before the node does
