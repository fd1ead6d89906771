"""Reliability campaigns: long, seeded runs of the real ``notifier`` under crashes and faults (``make reliability``).

Each campaign is a script (``python reliability/<name>.py --help``) that prints its figures as
JSON lines and exits 0 only when every target holds; ``tests/test_reliability.py`` runs a
short version of each in ``make test``.
"""
