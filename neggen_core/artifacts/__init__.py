"""Versioned artifacts: the store, manifests and the schema of record of every table."""

from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter, compute_version

__all__ = ["ArtifactRef", "ArtifactStore", "ArtifactWriter", "compute_version"]
