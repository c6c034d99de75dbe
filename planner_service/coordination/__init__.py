"""Adapters of the PlanCoordination port: in-process (the default) and Valkey."""
