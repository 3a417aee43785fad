"""`${VAR}` references in a profile, as Docker Compose writes them, and `~`/`$VAR` in a volume's
host folder. Pure: the environment comes in as an argument."""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$(?:(\$)|\{([^}]*)\}|(\{))")
_REFERENCE_BODY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?$", re.DOTALL)


def expand_references(text: str, env: Mapping[str, str] | None) -> str:
    """`${VAR}`, `${VAR:-default}` (unset or empty: default), `${VAR-default}` (unset: default)
    and `$$` (a literal `$`), as Docker Compose writes them. With `env=None` only the syntax is
    checked and `text` comes back as written. Raises ValueError naming what to fix."""

    def replace(match: re.Match[str]) -> str:
        dollar, body, unclosed = match.groups()
        if dollar:
            return "$"
        if unclosed:
            raise ValueError("`${` without its closing `}`")
        parsed = _REFERENCE_BODY.match(body)
        if parsed is None:
            raise ValueError(f"`${{{body}}}` is not a variable reference (write ${{NAME}})")
        name, operator, default = parsed.groups()
        if env is None:
            return match.group(0)
        value = env.get(name)
        if operator == ":-" and not value:
            return str(default)
        if operator == "-" and value is None:
            return str(default)
        if value is None:
            raise ValueError(
                f"${{{name}}} is not set (set it, or give a default: ${{{name}:-value}})"
            )
        return value

    expanded = _REFERENCE.sub(replace, text)
    return text if env is None else expanded


def expand_path(host: str, env: Mapping[str, str]) -> str:
    """`~` and `$VAR`/`${VAR}` in a volume's host folder; an unknown variable stays as written."""
    if host == "~" or host.startswith("~/"):
        home = env.get("HOME")
        if home:
            host = home + host[1:]

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    return re.sub(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})", replace, host)
