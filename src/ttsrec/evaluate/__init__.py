"""Merge evaluation: AUC/logloss against M, member diversity, and parameter scaling at equal cost."""

from ttsrec.evaluate.run import evaluate_runs

__all__ = ["evaluate_runs"]
