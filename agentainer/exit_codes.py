"""Exit statuses of Agentainer's commands."""

import enum


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1           # the server refused the request for another reason
    USAGE = 2           # bad flags or arguments (argparse's own status)
    NOT_FOUND = 3       # no such agent, image or route
    CONFLICT = 4        # the agent's state or a name does not allow it
    AUTH = 5            # missing, invalid or insufficient token
    UNAVAILABLE = 6     # the server, Redis or Docker cannot be reached
    CONFIG = 7          # invalid configuration
    INTERRUPTED = 130   # Ctrl-C
