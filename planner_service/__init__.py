"""The planner: turns a description of a game moment into an ImageGenerationPlan.

It never renders or stores anything; an import-linter contract keeps it from
importing the executor, a provider or a store.
"""
