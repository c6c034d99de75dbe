"""imagegen_runtime: what both servers run on and nothing a client needs.

Serving and graceful shutdown, the wiring both services' bootstraps share, the one
place domain errors become gRPC statuses, TLS and bearer tokens, health that follows
a dependency, settings read from the environment, what the OpenAI SDK's errors mean
(for both OpenAI adapters), and telemetry (logs, metrics, tracing). It imports the
contract (imagegen) and never a service.
"""
