"""Embedding products: neighbour tables computed from a trained model's vectors.

* :mod:`recspark.products.similarity` -- the computations (cosine top-k in
  blocks via :func:`recspark.models.topk.recommend`; explanations by join);
* :mod:`recspark.products.job` -- the ``jobs/products.py`` body: load a model
  from a training run, write each product as Parquet, log to MLflow.
"""

from recspark.products.similarity import (
    Embeddings,
    explanations,
    feature_items,
    feature_suggestions,
    similar_features,
    similar_items,
    top_k_cosine,
)

__all__ = [
    "Embeddings",
    "explanations",
    "feature_items",
    "feature_suggestions",
    "similar_features",
    "similar_items",
    "top_k_cosine",
]
