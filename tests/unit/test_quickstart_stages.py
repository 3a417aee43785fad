"""The quickstart's terminal: one line per stage; the build's own output (cmake, compilers, pip,
docker build) goes to a log file, which a failure names with its last lines."""

from __future__ import annotations

import subprocess
from pathlib import Path

STAGES = Path(__file__).resolve().parents[2] / "scripts" / "stages.sh"


def run(script: str, log: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; STAGE_LOG={log}; . {STAGES}; {script}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_a_stage_is_one_line_and_its_output_goes_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "quickstart.log"
    done = run(
        'stage 1 2 "compiling (10-20 minutes)"; '
        'logged sh -c "echo fatal: not a git repository >&2; echo [ 5%] Building CXX"; '
        'stage 2 2 "switching (about 10 s)"; logged true',
        log,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[1/2] compiling (10-20 minutes)",
        "[2/2] switching (about 10 s)",
    ]
    assert done.stderr == ""
    text = log.read_text()
    assert "fatal: not a git repository\n[ 5%] Building CXX\n" in text
    assert "==== [1/2] compiling (10-20 minutes)" in text


def test_a_failed_stage_names_the_log_and_shows_its_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "quickstart.log"
    failed = run(
        'stage 1 1 "compiling llama.cpp (10-20 minutes)"; '
        "logged sh -c 'seq -f \"line %g\" 1 20; exit 3'; echo not reached",
        log,
    )
    assert failed.returncode == 3
    assert failed.stdout == "[1/1] compiling llama.cpp (10-20 minutes)\n"
    assert failed.stderr.splitlines() == [
        f"error: compiling llama.cpp failed (exit 3); the whole log is {log}, its last lines:",
        *(f"  line {i}" for i in range(9, 21)),
    ]
