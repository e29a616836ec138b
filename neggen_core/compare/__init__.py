"""`neggen compare`: every method trained on the same artifacts, the table and the report."""
