"""Runs the official `vastai` SDK in its own process for tests/nodes/test_vast_sdk_contract.py.

Its own process because the SDK reads `VAST_URL` once, when `vastai.api.client` is imported
(`server_url_default`), and the key from `VAST_API_KEY` when `VastAI()` is made: a fresh
process given the double's address in its environment is pointed at it exactly as a user's
script would be. One JSON line in (`{"call": METHOD, "args": [...], "kwargs": {...}}`), one
JSON line out: `{"result": ...}`, `{"http_error": STATUS, "body": ...}` for the
`requests.HTTPError` the SDK raises, or `{"error": "Type: message"}`.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> None:
    import requests
    from vastai import VastAI

    sdk = VastAI()  # everything from the environment, as a user's script does
    for line in sys.stdin:
        ask = json.loads(line)
        answer: dict[str, Any]
        try:
            if ask["call"] == "server_url":
                answer = {"result": sdk.client.server_url}
            else:
                method = getattr(sdk, ask["call"])
                answer = {"result": method(*ask.get("args", []), **ask.get("kwargs", {}))}
        except requests.HTTPError as exc:
            response = exc.response
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            answer = {"http_error": response.status_code, "body": body}
        except Exception as exc:  # the test shows what the SDK raised, whatever it is
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer, default=str) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
