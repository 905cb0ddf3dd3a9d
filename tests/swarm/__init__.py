"""Multi-node Swarm tests: a second Docker node beside the host's (nodes.py)."""
