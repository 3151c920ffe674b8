"""The gateway's own HTTP face: /metrics (Prometheus) and the read-only status page."""
