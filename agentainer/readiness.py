"""``python -m agentainer.readiness``: wait until the server answers, then say where it is.

``make run`` calls this after starting the stack.
"""

import sys
import time

import requests

from agentainer import config as configuration
from agentainer.status import ExitStatus


def main(timeout: float = 60.0) -> int:
    settings = configuration.load()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{host}:{settings.port}"
    deadline = time.monotonic() + timeout
    reason = "no answer"
    while time.monotonic() < deadline:
        try:
            reply = requests.get(url + "/health", timeout=2)
            if reply.ok:
                print(f"Agentainer is up at {url}")
                print(f"admin token: {settings.token_file}"
                      if not settings.token else "admin token: set in the config")
                print("CLI: .venv/bin/agentainer (see README: put .venv/bin on PATH)")
                return ExitStatus.SUCCESS
            reason = reply.text.strip()
        except requests.RequestException as ex:
            reason = str(ex)
        time.sleep(0.5)
    print(f"Agentainer did not answer at {url}/health within {timeout:.0f}s: {reason}\n"
          f"see {settings.data_dir}/logs/server.log", file=sys.stderr)
    return ExitStatus.UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
