"""Mistakes in a profile: several at once (`ConfigProblems`), collected in one pass (`Problems`),
and the "did you mean" hint for a misspelt name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from aitherctl.errors import ConfigError


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class ConfigProblems(ConfigError):
    """Several mistakes in one profile. The message is the first; `problems` holds each one
    (`file:line: message`), and `detail` the others, so a plain error print shows them all."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        first = problems[0]
        super().__init__(first.reason, source=first.source, line=first.line)
        self.problems = tuple(problems)
        self.detail = "\n".join(problem.message for problem in problems[1:])


def problems_of(error: ConfigError) -> tuple[ConfigError, ...]:
    """Each mistake a `ConfigError` stands for (one, or all of a `ConfigProblems`)."""
    return error.problems if isinstance(error, ConfigProblems) else (error,)


class NotBuilt(Exception):
    """A service with a mistake already reported (a bad field): not built."""


class Problems:
    """Collects mistakes so one run reports each of them, not only the first."""

    def __init__(self) -> None:
        self.items: list[ConfigError] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as exc:
            self.items.extend(problems_of(exc))

    def raise_any(self) -> None:
        if not self.items:
            return
        items = sorted(self.items, key=lambda item: (item.source or "", item.line or 0))
        if len(items) == 1:
            raise items[0]
        raise ConfigProblems(items)
