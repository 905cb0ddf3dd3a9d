"""Agentainer: run LLM agents as Docker containers behind one proxy."""

__version__ = "0.1.0"
