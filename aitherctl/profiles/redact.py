"""Keeping secrets out of what aitherctl prints (`profile show`, its --json).

A value is hidden when its name looks like a secret (`HF_TOKEN`, `OPENAI_API_KEY`,
`DB_PASSWORD`, an `--api-key` flag, a URL's password or `?key=` parameter). A `${VAR}` reference
is shown as written: it names where the secret comes from, not the secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "******"
# Words that make a name secret wherever they appear in it ...
_SECRET_WORDS = ("SECRET", "PASSWORD", "PASSWD", "APIKEY", "CREDENTIAL")
# ... endings of one part (`HF_TOKEN`, `GITHUBTOKEN`, but not `MAX_TOKENS`) ...
_SECRET_ENDINGS = ("TOKEN", "PRIVATEKEY")
# ... and whole parts (`HF_KEY` but not `MONKEY`, `PASS` but not `PASSES`).
_SECRET_PARTS = frozenset({"KEY", "PASS", "PWD", "AUTH", "AUTHORIZATION", "COOKIE"})
# Names that look secret but hold only the NAME of a variable (`api_key_env: OPENAI_API_KEY`).
_REFERENCE_NAMES = frozenset({"API_KEY_ENV", "KEY_ENV", "TOKEN_ENV"})
_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-[^}]*)?\}$")


def is_secret_name(name: str) -> bool:
    upper = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")
    if upper in _REFERENCE_NAMES:
        return False
    if any(word in upper.replace("_", "") for word in _SECRET_WORDS):
        return True
    parts = upper.split("_")
    return any(part in _SECRET_PARTS or part.endswith(_SECRET_ENDINGS) for part in parts)


def is_reference(value: str) -> bool:
    """`${VAR}` or `${VAR:-default}` and nothing else: where the value comes from."""
    return bool(_REFERENCE.match(value.strip()))


def redact_value(name: str, value: str) -> str:
    if is_secret_name(name) and value and not is_reference(value):
        return MASK
    return redact_url(value)


def redact_env(env: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name: redact_value(name, value) for name, value in env}


def redact_args(args: Iterable[str]) -> list[str]:
    """Command-line arguments with the value of a secret-looking flag hidden:
    `--api-key sk-1` and `--api-key=sk-1` both become `--api-key ******`."""
    result: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            result.append(arg if is_reference(arg) else MASK)
            hide_next = False
            continue
        flag, equals, value = arg.partition("=")
        if flag.startswith("-") and is_secret_name(flag.lstrip("-")):
            if equals:
                result.append(f"{flag}={value if is_reference(value) else MASK}")
            else:
                result.append(arg)
                hide_next = True
            continue
        result.append(redact_url(arg))
    return result


def redact_url(value: str) -> str:
    """A URL's password and secret-looking query parameters hidden; other text unchanged."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        netloc = parts.netloc
        if parts.password:
            netloc = netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(is_secret_name(key) for key, _ in pairs):
                query = urlencode(
                    [(k, MASK if is_secret_name(k) else v) for k, v in pairs], safe="*"
                )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return value


def redact_mapping(value: Any, name: str = "") -> Any:
    """A nested section (`endpoints:`, `routing:`) with secret-looking values hidden."""
    if isinstance(value, Mapping):
        return {str(key): redact_mapping(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_mapping(item, name) for item in value]
    if isinstance(value, str):
        return redact_value(name, value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and is_secret_name(name):
        return MASK
    return value
