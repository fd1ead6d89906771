"""``notifier demo``: the bundled simulator, the real service and the console channel.

Within about 20 seconds a node enters EXCEPTION and recovers, a job stays in
STARTTING past a short ``for``, and a stream stalls; the alerts print as they fire.
Nothing here is special-cased: it is ``notifier run`` with a generated config.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

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


def demo_config(url: str, project_id: str, jobs: list[str], workdir: Path) -> str:
    names = ", ".join(f'"{j}"' for j in jobs)
    return f"""\
[source]
endpoint = "{url}"
project_id = "{project_id}"
auth = "none"
timeout = "2s"

[jobs]
names = [{names}]

[schedule]
interval = "1s"

[state]
path = "{workdir / 'state.db'}"

[paths]
rules = "rules"

[channels.stdout]
type = "console"
"""


def run_demo(duration: float = 22.0) -> int:
    from notifier.app import App
    from notifier.daemon import Daemon
    from notifier.simulator import Simulator, load_scenario

    scenario = load_scenario("demo")
    with Simulator(scenario) as sim, tempfile.TemporaryDirectory(prefix="notifier-demo-") as tmp:
        workdir = Path(tmp)
        (workdir / "rules").mkdir()
        (workdir / "rules" / "demo.toml").write_text(DEMO_RULES)
        jobs = sorted({job.name for job in scenario.jobs})
        config_path = workdir / "notifier.toml"
        config_path.write_text(demo_config(sim.url, sim.project_id, jobs, workdir))
        print(f"notifier demo: simulator at {sim.url}, watching {', '.join(jobs)} every second "
              f"for {duration:.0f}s (Ctrl-C stops)\n", file=sys.stderr, flush=True)

        async def go() -> None:
            app = await App.open(config_path)
            try:
                await Daemon(app).serve(duration=duration)
            finally:
                await app.aclose()

        asyncio.run(go())
    print("\nnotifier demo: done", file=sys.stderr)
    return 0
