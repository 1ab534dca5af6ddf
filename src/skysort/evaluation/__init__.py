"""Scoring a model's outputs against the truth: metrics per task kind beside their
baselines, the one scoring function that training and ``skysort evaluate`` share, and the
plots drawn from a run's files."""
