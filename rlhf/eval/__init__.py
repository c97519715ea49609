"""Evaluation: attribute accuracy of generators, win rates, tables."""
