"""README's production install, run for real in temporary paths, and ``notifier init`` itself.

The README block after ``<!-- install-test`` is the documented install: the slow test runs
its commands with /opt/notifier, /etc/notifier and /etc/systemd/system moved under tmp_path
(a venv from the running interpreter, ``pip install .`` of a copy of the checkout), skipping
only what needs a live systemd or a human ($EDITOR). So the documented path cannot rot.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.checks import check
from notifier.init import default_rules, init

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- install-test"
NEEDS_A_LIVE_SYSTEM = ("systemctl ", "journalctl ", "$EDITOR ")
COPY_IGNORED = shutil.ignore_patterns(".venv", ".git", "*_cache", "__pycache__", "build", "dist", "*.egg-info",
                                      "*.db", "*.db-*", "demo-state")


def readme_install_commands() -> list[str]:
    """The shell lines of the fenced block that follows the install-test marker in README.md."""
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "README.md: the install block lost its <!-- install-test --> marker"
    block = re.search(r"```sh\n(.*?)```", text[text.index(MARKER):], re.DOTALL)
    assert block, "README.md: no ```sh block after the install-test marker"
    return [line for line in block[1].splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_init_result(etc: Path) -> None:
    for directory in (etc, etc / "rules", etc / "templates"):
        assert directory.is_dir() and _mode(directory) == 0o755, f"{directory}: {oct(_mode(directory))}"
    for file in (etc / "notifier.toml", etc / "rules" / "default.toml"):
        assert file.is_file() and _mode(file) == 0o644, f"{file}: {oct(_mode(file))}"
    assert list((etc / "templates").iterdir()) == []


@pytest.mark.slow
def test_readme_install_steps_work(tmp_path: Path) -> None:
    src, opt, etc, units = tmp_path / "src", tmp_path / "opt", tmp_path / "etc", tmp_path / "systemd-system"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORED)  # pip builds in the tree: keep the checkout clean
    units.mkdir()
    ran: list[str] = []
    for line in readme_install_commands():
        if any(word in line for word in NEEDS_A_LIVE_SYSTEM):
            continue
        command = (line.replace("/opt/notifier", str(opt)).replace("/etc/notifier", str(etc))
                   .replace("/etc/systemd/system/", f"{units}/"))
        command = re.sub(r"^python3 ", f"{sys.executable} ", command)
        left = re.sub(r"/opt/notifier|/etc/notifier|/etc/systemd/system/", "", line)
        assert "/etc/" not in left and "/opt/" not in left, f"a README path the test does not move: {line}"
        if "pip install" in command:
            command += " --quiet --disable-pip-version-check"
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=src, capture_output=True,
                                text=True, timeout=300, check=False, env={**os.environ, "PIP_NO_INPUT": "1"})
        assert result.returncode == 0, f"README step failed: {line}\n{result.stdout}\n{result.stderr}"
        ran.append(line)
    assert any("notifier init" in line for line in ran) and any("notifier check" in line for line in ran), ran
    _assert_init_result(etc)
    assert _mode(etc / "secrets.env") == 0o600
    assert (units / "notifier.service").read_text() == (ROOT / "systemd" / "notifier.service").read_text()
    config = (etc / "notifier.toml").read_text()
    assert f'rules = "{etc}/rules"' in config and 'path = "/var/lib/notifier/state.db"' in config
    # the installed notifier checks the result as the unit's ExecStartPre would, secrets.env loaded
    result = subprocess.run([str(opt / "bin" / "notifier"), "check"], capture_output=True, text=True, timeout=60,
                            check=False, env={**os.environ, "NOTIFIER_CONFIG": str(etc / "notifier.toml")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:"), result.stdout


def test_init_writes_a_config_that_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    etc, state = tmp_path / "etc", tmp_path / "state" / "state.db"
    old = os.umask(0o077)  # systemd's UMask=0077, or a careful admin's: the files must still be readable
    try:
        assert init(etc, state=state) == 0
    finally:
        os.umask(old)
    _assert_init_result(etc)
    report = check(etc / "notifier.toml")
    assert report.exit_code == 0, report.problems
    assert not state.exists(), "check must not create the state file"
    config = (etc / "notifier.toml").read_text()
    assert f'path = "{state}"' in config and f'templates = "{etc}/templates"' in config
    assert "[channels.stdout]" in config and "# [channels.team-slack]" in config
    assert f"wrote {etc / 'notifier.toml'}" in capsys.readouterr().out


def test_init_keeps_existing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "notifier.toml").write_text("# mine\n")
    (tmp_path / "rules" / "default.toml").write_text("# my rules\n")
    assert init(tmp_path) == 0
    assert (tmp_path / "notifier.toml").read_text() == "# mine\n"
    assert (tmp_path / "rules" / "default.toml").read_text() == "# my rules\n"
    out = capsys.readouterr().out
    assert f"kept {tmp_path / 'notifier.toml'} (it exists; not overwritten)" in out
    assert (tmp_path / "templates").is_dir()
    assert init(tmp_path, state=tmp_path / "other.db") == 0  # the kept config decides where the state goes
    assert (f"kept {tmp_path / 'notifier.toml'} (it exists; not overwritten; --state is not applied: set [state] "
            "path in it)") in capsys.readouterr().out


def test_init_refuses_a_file_in_the_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "etc"
    target.write_text("")
    assert init(target) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "etc2").mkdir()
    (tmp_path / "etc2" / "rules").write_text("")
    assert init(tmp_path / "etc2") == 2
    assert not (tmp_path / "etc2" / "notifier.toml").exists()


def test_packaged_rules_are_the_repositorys() -> None:
    """rules/default.toml is the packaged notifier/rules/default.toml (a symlink): init writes exactly it."""
    assert (ROOT / "rules" / "default.toml").read_text() == default_rules()  # the root file links to the package's
