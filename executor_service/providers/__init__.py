"""Image providers for the executor service."""
