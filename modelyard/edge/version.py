"""The device agent's version: devices report it, bundles name the oldest agent that can install them."""

AGENT_VERSION = "1.0.0"
