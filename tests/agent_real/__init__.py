"""Real agent libraries driven offline: the programs whose spans the agent components are
tested on (end to end through a gateway, and recorded into tests/data/agent_sources/)."""
