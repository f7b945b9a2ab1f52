"""Evaluation metrics: distances between sample sets and mode statistics."""
