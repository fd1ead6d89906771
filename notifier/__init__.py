"""notifier: watches DataArts Studio real-time jobs and tells a team when they go wrong."""

__version__ = "0.1.0"
