"""`python -m convert`: thin entry point for gliner <-> Orbax conversion (implemented by the converter issue)."""
