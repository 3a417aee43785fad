"""`aitherctl serve`: one OpenAI-compatible endpoint for every model, and the scheduler behind it.

- `model`: the pure decisions (request priorities, the wait queue, pools, victim choice);
- `scheduler`: the one owner of the backends' state, driving containers through its effects;
- `dispatcher`: a request through routing, the ledger and the scheduler, to an upstream;
- `upstream`: the HTTP client to engines and providers; `app`: the aiohttp front-end;
- `metrics`: Prometheus text; `discovery`: finding a running `serve` and sizing its pools.
"""
