"""Object stores behind the ObjectStore port."""
