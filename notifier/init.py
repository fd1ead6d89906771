"""``notifier init DIR``: a starting configuration the service can run as is.

Writes ``DIR/notifier.toml`` (absolute paths, a console channel so it needs no secret,
commented-out Slack, email and webhook channels), ``DIR/rules/default.toml`` (the bundled
default rules) and an empty ``DIR/templates/``. Directories are made 0755 and files 0644
whatever the umask: the service's dynamic user must read them. An existing file is never
overwritten: it is kept and reported. Secrets are not written here: they go in
``/etc/notifier/secrets.env`` (README, "Running it in production").

Exit codes follow the CLI's contract: 0 written (or already there), 2 when a file stands
where a directory must go, or a file cannot be written.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import resources
from pathlib import Path

from notifier.config import DEFAULT_STATE_PATH

EXIT_OK, EXIT_CONFIG = 0, 2  # the CLI's exit code contract (ARCHITECTURE.md, "Contracts")
DIR_MODE, FILE_MODE = 0o755, 0o644


def default_rules() -> str:
    """The shipped rules/default.toml (package data: ``notifier init`` works from a wheel too)."""
    return resources.files("notifier").joinpath("rules/default.toml").read_text(encoding="utf-8")


def init(directory: Path, *, state: Path | None = None) -> int:
    """Write the starting files under ``directory``; print what was written and what was kept."""
    base = Path(directory).absolute()
    state_path = Path(state).absolute() if state is not None else Path(DEFAULT_STATE_PATH)
    config = base / "notifier.toml"
    files = {
        config: config_text(base, state_path),
        base / "rules" / "default.toml": default_rules(),
    }
    try:
        for path in (base, base / "rules", base / "templates"):
            _make_dir(path)
        for path, text in files.items():
            if _write_new(path, text):
                print(f"wrote {path}")
            else:
                unused = "; --state is not applied: set [state] path in it" if state and path == config else ""
                print(f"kept {path} (it exists; not overwritten{unused})")
    except _InTheWay as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"next: edit {config} ([source] and [jobs], or a [sources.NAME] table per DataArts "
          f"project; [channels]), then "
          f"notifier check -c {config}")
    return EXIT_OK


class _InTheWay(Exception):
    """Something that is not a directory stands where a directory must go (or the reverse)."""


def _make_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise _InTheWay(f"{path} exists and is not a directory")
    if not path.exists():
        path.mkdir(parents=True, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
        print(f"created {path}/")


def _write_new(path: Path, text: str) -> bool:
    """Write ``text`` to a new file at ``path`` (mode 0644); False when the path already exists."""
    if path.is_dir():
        raise _InTheWay(f"{path} is a directory; expected a file")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)  # never overwrites, even racing
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), FILE_MODE)  # the umask (0077 under systemd) must not hide it from the service
        out.write(text)
    return True


def _toml_str(value: Path | str) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def config_text(base: Path, state_path: Path) -> str:
    """The starting ``notifier.toml`` for a config directory ``base``."""
    return f'''\
# notifier.toml written by `notifier init`. Check it with:
#   notifier check -c {base / "notifier.toml"}
# Secrets never live in this file: only the names of the environment variables (or files)
# that hold them. Under systemd, put them in /etc/notifier/secrets.env (mode 0600, read by
# systemd before the service drops its privileges), e.g.
#   HUAWEICLOUD_SDK_AK=...
#   HUAWEICLOUD_SDK_SK=...
#   SLACK_BOT_TOKEN=xoxb-...

[source]
# The DataArts Studio (DGC) endpoint of your region and your project ID (console: My Credentials).
endpoint = "https://dayu-dlf.cn-north-4.myhuaweicloud.com"
project_id = "your-project-id"
workspace = ""                        # your workspace ID, sent as header `workspace` when set
# CHANGE auth to "aksk" once the AK/SK are in secrets.env: "none" only lets `notifier check`
# pass before any secret exists (Huawei's API refuses unsigned requests: `notifier check --online`).
auth = "none"                         # "aksk" | "token" | "iam" | "none" (the bundled simulator)
ak_env = "HUAWEICLOUD_SDK_AK"         # from secrets.env; or, with LoadCredential=ak:/path in the unit,
sk_env = "HUAWEICLOUD_SDK_SK"         #   ak_file = "/run/credentials/notifier.service/ak" (and sk_file)
timeout = "10s"
concurrency = 16
max_requests_per_second = 20          # DGC allows 30/s per user for these APIs

[jobs]
discover = true                       # watch every REAL_TIME job the list API returns
include = ["*"]                       # or name them: names = ["job_sms", "job_orders"]
exclude = []

[schedule]
interval = "60s"

[state]
path = {_toml_str(state_path)}

[paths]
rules = {_toml_str(base / "rules")}
templates = {_toml_str(base / "templates")}   # your <template>.<channel type>.j2 files

# Alerts go to every channel below unless a rule names its own. The console channel writes
# to the journal (`journalctl -u notifier`); replace it with the ones you use.
[channels.stdout]
type = "console"

# [channels.team-slack]
# type = "slack"
# channel = "#data-alerts"
# token_env = "SLACK_BOT_TOKEN"       # or: webhook_url_env = "SLACK_WEBHOOK_URL"
#
# [channels.oncall-mail]
# type = "email"
# host = "smtp.example.com"
# port = 587
# security = "starttls"
# username_env = "SMTP_USER"
# password_env = "SMTP_PASSWORD"
# from = "notifier@example.com"
# to = ["oncall@example.com"]
#
# [channels.hook]
# type = "webhook"
# url = "https://example.com/alerts"
# secret_env = "HOOK_SECRET"          # X-Notifier-Signature: sha256=<hex of HMAC-SHA256(body)>
'''
