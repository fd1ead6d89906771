"""``notifier demo``: the bundled simulator, the real service and the console channel.

One simulator serves two projects on one port (scenario ``demo_sources.toml``), each with its
own AK/SK: ``sales`` (workspace ``ws-sales``) and ``ops``. The generated config watches them
as two sources, ``[sources.sales]`` and ``[sources.ops]``, and every alert names its source
(``sales/job_sms``). Within about 20 seconds, in sales, a node enters EXCEPTION and recovers
and a job stays in STARTTING past a short ``for``; in ops, a stream stalls and a job is
stopped; the alerts print as they fire. No secret is in the config: sales reads its AK/SK
from files (as systemd credentials are read), ops from environment variables set for the
run. Nothing here is special-cased: it is ``notifier run`` with a generated config.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notifier.simulator import Project

DEMO_SCENARIO = "demo_sources.toml"  # under notifier/simulator/scenarios/
OPS_AK_ENV, OPS_SK_ENV = "NOTIFIER_DEMO_OPS_AK", "NOTIFIER_DEMO_OPS_SK"

DEMO_RULES = """\
[[rule]]
name = "node-exception"
scope = "node"
status = ["EXCEPTION"]
severity = "critical"
resolved = true

[[rule]]
name = "job-stuck-starting"
scope = "job"
status = ["STARTING"]       # alias of the API's STARTTING
for = "5s"                  # 10m in production; short for the demo
severity = "warning"

[[rule]]
name = "stream-stalled"
scope = "node"
status = ["NORMAL"]
stalled = "totalPutRecords"
node_types = ["ExecuteDISStream", "ExecuteCloudStream"]
for = "4s"
severity = "warning"

[[rule]]
name = "job-stopped"
scope = "job"
transition = { from = ["NORMAL"], to = ["STOPPED", "STOPPING"] }
severity = "info"
"""


def _source_table(url: str, project: Project, credentials: str, jobs: str) -> str:
    workspace = f'workspace = "{project.workspace}"\n' if project.workspace else ""
    return f"""\
[sources.{project.name}]
endpoint = "{url}"
project_id = "{project.id}"
{workspace}auth = "aksk"
{credentials}timeout = "2s"

[sources.{project.name}.jobs]
{jobs}
"""


def demo_config(url: str, sales: Project, ops: Project, workdir: Path) -> str:
    """Two sources on one simulator: sales' AK/SK in files, ops' in environment variables; no secret here."""
    secrets = workdir / "secrets"
    names = ", ".join(f'"{j}"' for j in sorted(job.name for job in sales.jobs))
    sales_table = _source_table(url, sales, f'ak_file = "{secrets / "sales_ak"}"\n'
                                            f'sk_file = "{secrets / "sales_sk"}"\n', f"names = [{names}]")
    ops_table = _source_table(url, ops, f'ak_env = "{OPS_AK_ENV}"\nsk_env = "{OPS_SK_ENV}"\n',
                              "discover = true             # every job the ops project lists")
    return f"""\
{sales_table}
{ops_table}
[schedule]
interval = "1s"

[state]
path = "{workdir / 'state.db'}"

[paths]
rules = "rules"

[channels.stdout]
type = "console"
"""


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block, then put back what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def run_demo(duration: float = 22.0) -> int:
    from notifier.app import App
    from notifier.daemon import Daemon
    from notifier.simulator import Simulator, load_scenario
    from notifier.simulator.scenario import SCENARIO_DIR

    scenario = load_scenario(SCENARIO_DIR / DEMO_SCENARIO)
    projects = {project.name: project for project in scenario.served()}
    sales, ops = projects["sales"], projects["ops"]
    with (Simulator(scenario) as sim, tempfile.TemporaryDirectory(prefix="notifier-demo-") as tmp,
          _environment({OPS_AK_ENV: ops.auth.ak, OPS_SK_ENV: ops.auth.sk})):
        workdir = Path(tmp)
        (workdir / "rules").mkdir()
        (workdir / "rules" / "demo.toml").write_text(DEMO_RULES)
        (workdir / "secrets").mkdir(mode=0o700)
        _write_private(workdir / "secrets" / "sales_ak", sales.auth.ak + "\n")
        _write_private(workdir / "secrets" / "sales_sk", sales.auth.sk + "\n")
        config_path = workdir / "notifier.toml"
        _write_private(config_path, demo_config(sim.url, sales, ops, workdir))
        sales_jobs = ", ".join(sorted(job.name for job in sales.jobs))
        print(f"notifier demo: simulator at {sim.url} serving two projects, watched every second for "
              f"{duration:.0f}s (Ctrl-C stops):\n"
              f"  source sales: project {sales.id}, workspace {sales.workspace}, jobs {sales_jobs}; "
              f"AK/SK from files\n"
              f"  source ops:   project {ops.id}, jobs discovered; AK/SK from ${OPS_AK_ENV}, ${OPS_SK_ENV}\n"
              f"  alerts name their source: sales/JOB, ops/JOB\n", file=sys.stderr, flush=True)

        async def go() -> None:
            app = await App.open(config_path)
            try:
                await Daemon(app).serve(duration=duration)
            finally:
                await app.aclose()

        asyncio.run(go())
    print("\nnotifier demo: done", file=sys.stderr)
    return 0
