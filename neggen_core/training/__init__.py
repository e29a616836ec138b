"""Training: the data it reads, the trainer, the train stage."""
