"""Hyperparameter search: parallel trials on Spark, scored on a validation split, one MLflow run each.

``space`` turns ``tune.space`` into optuna distributions and grids, ``strategies``
builds the optuna study (grid, random or TPE, with a median pruner), ``objective``
fits and scores one trial, ``search`` runs trials concurrently and refits the best.
"""
