"""Orchestration: the stages of a job, in order, with counts and timings (no Spark logic of its own)."""
