"""Observability shared by both services: structured logs with a per-call
request id (logs), what the server's interceptor records of each call: its
request id, bounded log fields, closing line and final code (calls), Prometheus
metrics on their own HTTP port (metrics), and OpenTelemetry tracing (tracing).
Nothing here runs at import; each service's bootstrap starts what its settings
ask for.
"""
