"""Model runtimes behind the agent's stages: each wraps one third-party inference library, and is the only module
that imports it (so its private names and version pins live in one place)."""
