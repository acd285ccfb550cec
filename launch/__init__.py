"""Launchers: local multi-process runs, SLURM clusters, TPU VM pod slices."""
