"""The DGC API source: signing (``signer``), pure parsing (``parse``) and the async client (``client``).

    DgcClient.fetch_all(jobs) --GET /v1/{project_id}/jobs/{job}/status--> parse_status --> FetchResult
"""

from __future__ import annotations

from notifier.source.client import (
    ClientStats,
    DgcClient,
    RateLimiter,
    retry_delay,
    select_jobs,
)
from notifier.source.parse import (
    parse_error,
    parse_job_list,
    parse_status,
)
from notifier.source.signer import sign

__all__ = [
    "ClientStats",
    "DgcClient",
    "RateLimiter",
    "parse_error",
    "parse_job_list",
    "parse_status",
    "retry_delay",
    "select_jobs",
    "sign",
]
