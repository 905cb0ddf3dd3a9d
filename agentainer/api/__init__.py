"""The HTTP transport: turns requests into AgentService calls and results into replies."""
