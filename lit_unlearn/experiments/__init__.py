"""One-command experiment drivers that reproduce the papers' comparison tables."""
