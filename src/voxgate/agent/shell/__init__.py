"""The voice agent's asyncio shell: the ``Agent``/``CallIO`` interface transports run agents through (``base``),
the Realtime session around the sans-IO core (``realtime``), response runners (``response``), responders
(``responders``: scripted, the embedded LLM, an OpenAI-compatible endpoint), the model stack loaded once per process
(``stack``), and the echo agent for tests and benchmarks (``echo``)."""
