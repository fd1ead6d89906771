"""The benchmark keeps working: each part of ``make bench`` at a toy size, its JSON lines checked.

The figures themselves are not asserted against targets here (timing lives in ``make
bench``, never in tests); what is asserted is that every part runs the real service and
reports the figures the README quotes, so the benchmark cannot rot between measurements.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str) -> dict[str, dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {f"{line['figure']}/{line.get('jobs', '')}": line for line in lines}


def test_the_cycle_part_measures_floor_run_and_once_and_what_a_quiet_cycle_writes() -> None:
    figures = bench("bench.cycle", "--jobs", "40", "--rounds", "1", "--cycles", "1")
    for name in ("floor_cpu_s", "run_steady_cpu_s", "once_cpu_s", "run_peak_rss_mb", "sim_cpu_share_run"):
        assert figures[f"{name}/40"]["value"] > 0, name
    assert figures["run_requests_per_cycle/40"]["value"] == 41  # one list request and 40 statuses
    assert figures["writes_steady_rows/40"]["value"] == 400  # every node's counters moved
    quiet = bench("bench.cycle", "--quiet")
    assert quiet["writes_quiet_rows/1000"]["value"] == 0 and quiet["writes_quiet_wal_bytes/1000"]["value"] == 0


def test_the_detection_part_sees_changes_at_the_limit_for_notifier_and_the_naive_poller() -> None:
    figures = bench("bench.detect", "--jobs", "300", "--duration", "900", "--warmup", "120", "--hold", "300",
                    "--k", "20", "--change-share", "0.02")
    job = figures["notifier_detect_job_median_s/300"]
    assert job["changes"] > 0 and job["detected"] > 0, job
    assert figures["notifier_requests_per_s/300"]["ok"] is True  # never over the API's limit
    assert figures["naive_detect_job_median_s/300"]["detected"] > 0
    assert "naive_over_notifier_job_median/" in figures
