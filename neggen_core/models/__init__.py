"""Recommenders (MF, LightGCN, NegGen) and negative samplers, found by name in a registry."""
