"""Modal screens of the monitor: confirm an action, read a text (logs, help, a plan), pick one."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

HELP = """\
Keys
  p   switch profile: pick one, read the plan, confirm
  r   restart the selected service (confirms)
  s   stop the selected service (confirms)
  l   the selected service's last log lines
  u   free the selected service's VRAM where the engine can (Ollama: keep_alive 0,
      ComfyUI: /free); vLLM and llama.cpp hold theirs until stopped
  o   sort the services by the next column (name, VRAM, engine, queue, tok/s)
  ↑↓  select a service
  ?   this help
  q   quit

Columns
  VRAM    NVML's per-process memory of the container's processes (children included)
  budget  the profile's VRAM budget for the service
  queue   requests running / waiting, from the engine's own metrics
  tok/s   generated tokens per second, from the engine's token counter
  A state followed by `timeout`, `down` or `error` means its metrics did not answer.
"""


class ConfirmScreen(ModalScreen[bool]):
    """Asks yes or no; dismisses with the answer."""

    BINDINGS = [  # noqa: RUF012 - Textual's declaration style
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 90; max-height: 80%; height: auto; border: thick $warning; background: $surface;
        padding: 1 2;
    }
    ConfirmScreen VerticalScroll { height: auto; max-height: 30; }
    ConfirmScreen #question { margin-top: 1; text-style: bold; }
    """

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self._question = question
        self._detail = detail

    def compose(self) -> ComposeResult:
        with Vertical():
            if self._detail:
                with VerticalScroll():
                    yield Static(self._detail, markup=False)
            yield Static(f"{self._question}  [y/n]", id="question", markup=False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class TextScreen(ModalScreen[None]):
    """A titled, scrollable text: help, a service's logs."""

    BINDINGS = [Binding("escape,q,question_mark,l", "close", "close")]  # noqa: RUF012
    DEFAULT_CSS = """
    TextScreen { align: center middle; }
    TextScreen > VerticalScroll {
        width: 95%; height: 90%; border: thick $accent; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self._title = title
        self._text = text

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll()
        scroll.border_title = self._title
        with scroll:
            yield Static(self._text, markup=False)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).scroll_end(animate=False)

    def action_close(self) -> None:
        self.dismiss(None)


class PickScreen(ModalScreen[str | None]):
    """Picks one of `choices`; dismisses with it, or None on escape."""

    BINDINGS = [Binding("escape,q", "cancel", "cancel")]  # noqa: RUF012
    DEFAULT_CSS = """
    PickScreen { align: center middle; }
    PickScreen > OptionList { width: 60; height: auto; max-height: 70%; border: thick $accent; }
    """

    def __init__(self, title: str, choices: list[str], current: str | None = None) -> None:
        super().__init__()
        self._title = title
        self._choices = choices
        self._current = current

    def compose(self) -> ComposeResult:
        options = OptionList(
            *(
                Option(f"{name}  (active)" if name == self._current else name, id=name)
                for name in self._choices
            )
        )
        options.border_title = self._title
        yield options

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
