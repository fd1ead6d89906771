"""Part 3's baseline: the poller a user would write instead of notifier.

Sequential (one ``httpx.Client``), one status request per job per cycle, the previous
states in a JSON file, and an "alert" is a POST to the webhook on any job or node status
change (a job or node first seen in a status other than NORMAL counts as a change from
NORMAL). The job names come from the list API once at start. It stops by itself after
``--duration`` seconds (SIGTERM also stops it).

    python -m bench.naive --endpoint URL --project ID --hook URL --interval 6 --duration 240 --state s.json
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def list_jobs(client: httpx.Client, base: str) -> list[str]:
    names: list[str] = []
    while True:
        r = client.get(f"{base}/jobs", params={"jobType": "REAL_TIME", "limit": 1000, "offset": len(names)})
        r.raise_for_status()
        doc = r.json()
        names += [job["name"] for job in doc["jobs"]]
        if not doc["jobs"] or len(names) >= doc["total"]:
            return names


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--hook", required=True)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(1))
    end = time.monotonic() + args.duration
    base = f"{args.endpoint}/v1/{args.project}"
    previous: dict[str, Any] = json.loads(args.state.read_text()) if args.state.exists() else {}
    failed = 0
    with httpx.Client(timeout=10.0) as client:
        names = list_jobs(client, base)
        while time.monotonic() < end and not stopping:
            started = time.monotonic()
            for name in names:
                if time.monotonic() >= end or stopping:
                    break
                r = client.get(f"{base}/jobs/{name}/status")
                if r.status_code != 200:
                    failed += 1
                    continue
                doc = r.json()
                now = {"status": doc["status"], "nodes": {n["name"]: n["status"] for n in doc.get("nodes", [])}}
                old = previous.get(name) or {"status": "NORMAL", "nodes": {}}
                alerts = []
                if now["status"] != old["status"]:
                    alerts.append({"job": name, "node": "", "status": now["status"], "previous": old["status"]})
                for node, status in now["nodes"].items():
                    was = old["nodes"].get(node, "NORMAL")
                    if status != was:
                        alerts.append({"job": name, "node": node, "status": status, "previous": was})
                for alert in alerts:
                    client.post(args.hook, json=alert)
                previous[name] = now
            args.state.write_text(json.dumps(previous))
            rest = args.interval - (time.monotonic() - started)
            if rest > 0:
                time.sleep(min(rest, max(0.0, end - time.monotonic())))
    print(json.dumps({"jobs": len(names), "failed": failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
