"""Thin Prefect tasks, one module per stage: id, skip-if-built, build, write (via neggen_core)."""
