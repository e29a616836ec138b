"""The embeddings stage."""
