"""NegGen's command line; the pipeline lives in neggen_core, tasks and flows."""
