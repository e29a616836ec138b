"""Encoders: sentence vectors for texts, Pillow features for images, a FAISS index over items."""
