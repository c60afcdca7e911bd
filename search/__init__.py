"""Bit allocation: cost model, budgets and the strategies that turn a ScoreTable into a plan."""
