"""The pure parts of the SSH transport (aitherctl/docker/ssh_transport.py): the ssh command
line, where the control socket goes, and the one line made from what ssh wrote. The stderr
samples are what OpenSSH 9.2 and docker CLI 27's `docker system dial-stdio` print here (run by
hand against scripts/test-hosts.sh's sshd and a stopped engine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aitherctl.docker.ssh_transport import (
    CONTROL_PERSIST_S,
    SshTarget,
    control_path,
    ssh_command,
    summarize_stderr,
)


def test_the_target_is_what_ssh_is_given() -> None:
    assert SshTarget.parse("ssh://root@node-a:2222") == SshTarget("node-a", "root", 2222)
    assert SshTarget.parse("ssh://box") == SshTarget("box")
    assert SshTarget.parse("ssh://me@[fd00::1]:22").host == "fd00::1"
    assert SshTarget("box", "me", 2200).describe() == "me@box:2200"
    with pytest.raises(ValueError, match="not a number"):
        SshTarget.parse("ssh://box:http")
    with pytest.raises(ValueError, match="is not ssh://"):
        SshTarget.parse("tcp://box:2376")


def test_the_command_multiplexes_and_leaves_the_rest_to_the_users_ssh_config() -> None:
    command = ssh_command(SshTarget("node-a", "root", 2222), "/run/user/1000/aitherctl-ssh/ab%c")
    assert command[:2] == ["ssh", "-T"]
    options = [command[i + 1] for i, word in enumerate(command) if word == "-o"]
    assert options == [
        "ControlMaster=auto",
        "ControlPath=/run/user/1000/aitherctl-ssh/ab%%c",  # ssh expands % tokens
        f"ControlPersist={CONTROL_PERSIST_S}",
        "ServerAliveInterval=10",
        "ServerAliveCountMax=3",
    ]
    assert command[-7:] == ["-l", "root", "-p", "2222", "--", "node-a", "docker system dial-stdio"]
    # Without a control path (multiplexing off): no control options at all, the user's
    # ~/.ssh/config decides.
    assert ssh_command(SshTarget("box"), None) == [
        "ssh",
        "-T",
        "--",
        "box",
        "docker system dial-stdio",
    ]


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "s"
    monkeypatch.setenv("AITHER_STATE_DIR", str(folder))
    monkeypatch.delenv("AITHER_SSH_MULTIPLEX", raising=False)
    return folder


def test_the_control_socket_sits_in_a_private_folder_of_the_state(state: Path) -> None:
    path = control_path("ssh://root@node-a:2222")
    assert path is not None
    folder = Path(path).parent
    if len(str(state)) < 40:  # pytest's tmp_path is usually short enough
        assert folder == state / "ssh"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert folder.stat().st_uid == os.geteuid()
    # One per endpoint, the same each time.
    assert control_path("ssh://root@node-a:2222") == path
    assert control_path("ssh://root@node-b:2222") != path


def test_a_state_folder_too_long_for_a_socket_falls_back_to_a_short_private_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path / ("x" * 90)))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    path = control_path("ssh://box")
    assert path is not None
    assert path.startswith(f"/tmp/aitherctl-ssh-{os.geteuid()}/")
    assert len(path) + 17 <= 103
    # Another state folder, another master.
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path / ("y" * 90)))
    assert control_path("ssh://box") != path


def test_a_folder_open_to_others_is_narrowed_and_a_symlink_is_refused(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (state / "ssh").mkdir(parents=True, mode=0o755)
    (state / "ssh").chmod(0o755)
    path = control_path("ssh://box")
    assert path is not None
    assert (state / "ssh").stat().st_mode & 0o777 == 0o700

    other = tmp_path / "other"
    other.mkdir()
    (other / "target").mkdir()
    (other / "ssh").symlink_to(other / "target")
    monkeypatch.setenv("AITHER_STATE_DIR", str(other))
    path = control_path("ssh://box")
    assert path is None or not path.startswith(str(other))


def test_multiplexing_can_be_left_to_the_users_ssh_config(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AITHER_SSH_MULTIPLEX", "0")
    assert control_path("ssh://box") is None
    monkeypatch.setenv("AITHER_SSH_MULTIPLEX", "1")
    assert control_path("ssh://box") is not None


@pytest.mark.parametrize(
    ("stderr", "line"),
    [
        (
            "ssh: connect to host 127.0.0.1 port 2223: Connection refused\n",
            "ssh: connect to host 127.0.0.1 port 2223: Connection refused",
        ),
        (
            "failed to open the raw stream connection: dial unix /tmp/aither-node-a/docker.sock: "
            "connect: connection refused\n",
            "the Docker engine behind ssh does not answer (dial unix "
            "/tmp/aither-node-a/docker.sock: connect: connection refused)",
        ),
        (
            "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts.\n"
            "root@127.0.0.1: Permission denied (publickey).\n",
            "ssh: root@127.0.0.1: Permission denied (publickey).",
        ),
        (
            'time="2026-11-24T01:36:17Z" level=error msg="error while CloseWrite (stdin to '
            'stream): close unix @->/tmp/x.sock: use of closed network connection"\n',
            None,
        ),
        (
            'time="2026-11-24T01:36:17Z" level=fatal msg="exec: \\"docker\\": not found"\n',
            'ssh: exec: \\"docker\\": not found',
        ),
        ("", None),
    ],
)
def test_what_ssh_wrote_becomes_one_line(stderr: str, line: str | None) -> None:
    assert summarize_stderr(stderr) == line


def test_a_long_message_is_clipped_to_one_short_line() -> None:
    line = summarize_stderr("ssh: " + "word " * 100 + "\nsecond line\n")
    assert line == "ssh: second line"
    line = summarize_stderr("ssh: " + "word " * 100)
    assert line is not None
    assert len(line) == 200
    assert line.endswith("…")


def test_no_ssh_client_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aitherctl.docker.engine import client_for
    from aitherctl.errors import DockerUnavailableError

    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh there
    with pytest.raises(DockerUnavailableError) as caught:
        client_for("ssh://me@box.invalid")
    assert caught.value.message == (
        "cannot use ssh://me@box.invalid: no `ssh` on PATH: install the OpenSSH client"
    )
