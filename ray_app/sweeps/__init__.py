"""Hyperparameter sweeps: a search space over a base job, run by Ray Tune; every trial a job."""
