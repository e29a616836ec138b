"""The train stage: its contract, the trainer (compute) and the job that reads and writes the
artifacts."""
