"""Prefect flows: the `neggen` pipeline DAG."""
