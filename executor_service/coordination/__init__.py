"""Adapters of the ExecutionCoordination port: in-process (the default) and Valkey."""
