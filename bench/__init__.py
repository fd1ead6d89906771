"""``make bench`` (``python -m bench``): CPU, detection, naive baseline, writes and latency figures as JSON lines."""
