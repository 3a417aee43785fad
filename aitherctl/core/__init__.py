"""The pure core: plain dataclasses and functions, no I/O.

Nothing under `aitherctl.core` imports docker, pynvml, httpx, rich or textual; a test enforces it.
"""
