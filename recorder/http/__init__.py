"""The daemon's window: an HTTP listener in the supervisor's nursery serving /metrics, /healthz
and /status (listener.py, metrics.py, status.py; window.py puts them together)."""
