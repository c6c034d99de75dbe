"""Observability shared by both services: structured logs with a per-call
request id (logs), Prometheus metrics on their own HTTP port (metrics), the
server interceptor that sees every call's final status (interceptors), and
OpenTelemetry tracing (tracing). Nothing here runs at import; each service's
server.py starts what its settings ask for.
"""
