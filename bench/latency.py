"""`make bench`, part 2: how long from the poll that sees a change to the channel receiving it.

Runs the real service (`notifier run`, interval 1 s) against the in-process simulator and
a webhook receiver on loopback, flips a node into EXCEPTION and back several times, and
measures, per flip, the time between the first status request after the flip (the poll
that saw it) and the webhook request arriving. The bar (ARCHITECTURE.md, "Quality bars"): under 1 s.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notifier.simulator import Simulator, load_scenario  # noqa: E402
from tests.support.webhook_receiver import WebhookReceiver  # noqa: E402

FLIPS = 6
RULES = '[[rule]]\nname = "node-exception"\nscope = "node"\nstatus = ["EXCEPTION"]\n'


def main() -> None:
    with Simulator(load_scenario("seed")) as sim, WebhookReceiver() as hook, tempfile.TemporaryDirectory() as tmp:
        sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
        d = Path(tmp)
        (d / "rules").mkdir()
        (d / "rules" / "r.toml").write_text(RULES)
        config = d / "notifier.toml"
        config.write_text(
            f'[source]\nendpoint = "{sim.url}"\nproject_id = "{sim.project_id}"\nauth = "none"\n\n'
            '[jobs]\nnames = ["job_sms"]\n\n[schedule]\ninterval = "1s"\n\n[state]\npath = "state.db"\n\n'
            f'[paths]\nrules = "rules"\n\n[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n\n'
            '[noise]\nflap_threshold = 0\n')  # six flips in 15 s are flapping by design: measure latency only
        proc = subprocess.Popen([sys.executable, "-m", "notifier", "run", "-c", str(config), "--log-level", "warning"],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        sim_t0 = time.monotonic() - sim.now()  # scenario time -> this process' monotonic clock
        latencies: list[float] = []
        try:
            time.sleep(2)  # let the first cycles establish the state
            for i in range(FLIPS):
                status = "EXCEPTION" if i % 2 == 0 else "NORMAL"
                flipped_at = sim.now()
                sim.set_node_status("job_sms", "DLI_SMS_GES", status)
                hook.wait_for(i + 1, timeout=10)
                received = time.monotonic()
                polls = [r.t for r in sim.requests.snapshot() if r.t >= flipped_at and r.path.endswith("/status")]
                latencies.append(received - (sim_t0 + polls[0]))
                time.sleep(1.3)  # a quiet cycle between flips
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    print(f"poll -> channel latency over {FLIPS} changes: median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms (bar: < 1000 ms)")


if __name__ == "__main__":
    main()
