"""`aitherctl serve`: the OpenAI-compatible HTTP front-end of the scheduler (aiohttp).

A front-end like the CLI and the TUI: it parses requests, checks API keys and writes answers;
the decisions are `aitherctl.ops.gateway` and `aitherctl.ops.scheduler`.
"""
