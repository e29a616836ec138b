"""Ingest: Amazon-style raw files into `users`, `items` and `interactions` Parquet tables."""
