"""Parameter and accumulator arrays of one side (users or items) of a WARP/BPR model.

The model follows LightFM: every *feature* (a user id, an item id, a tag...)
owns an embedding row and a bias, and a user or item is represented by the
weighted sum of its feature rows. The optimiser keeps per-parameter
accumulators next to the parameters, so a side is the five (adagrad) or seven
(adadelta) arrays held by :class:`SideParams`.

The Spark trainer broadcasts the item side to every shard and merges per-array
deltas (``new - old``) afterwards, so every field is a plain C-contiguous
float32 ``numpy.ndarray`` and the whole side round-trips through a dict of
arrays (:meth:`SideParams.to_dict` / :meth:`SideParams.from_dict`).

This module never imports pyspark.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recspark.config import OPTIMISERS
from recspark.errors import ConfigError, DataValidationError


_ARRAY_FIELDS = (
    "embeddings",
    "biases",
    "emb_accum",
    "bias_accum",
    "emb_delta_accum",
    "bias_delta_accum",
)


@dataclass
class SideParams:
    """Embeddings, biases and optimiser accumulators of one side of the model.

    Attributes
    ----------
    embeddings : np.ndarray of float32, shape [n_features, no_components]
        One latent row per feature; a row's representation is the
        feature-weighted sum of these rows.
    biases : np.ndarray of float32, shape [n_features]
        One bias per feature, summed with the same weights.
    emb_accum, bias_accum : np.ndarray of float32, same shapes
        adagrad: running sum of squared gradients, initialised to 1 as in
        LightFM (so the first step is ``learning_rate * g``, never a division
        by zero). adadelta: running average of squared gradients, initialised
        to 0.
    emb_delta_accum, bias_delta_accum : np.ndarray of float32 or None
        adadelta only: running average of squared updates (LightFM's
        "momentum" arrays), initialised to 0. ``None`` for adagrad.

    Notes
    -----
    The optimiser is implied by which accumulators are present
    (:attr:`optimiser`), so a side cannot silently be trained with an
    optimiser whose accumulators it does not carry.
    """

    embeddings: npt.NDArray[np.float32]
    biases: npt.NDArray[np.float32]
    emb_accum: npt.NDArray[np.float32]
    bias_accum: npt.NDArray[np.float32]
    emb_delta_accum: npt.NDArray[np.float32] | None = None
    bias_delta_accum: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        self._validate()

    @property
    def nbytes(self) -> int:
        """Bytes of all its arrays: what a broadcast of this side ships and the driver keeps."""
        arrays = (self.embeddings, self.biases, self.emb_accum, self.bias_accum, self.emb_delta_accum,
                  self.bias_delta_accum)
        return sum(a.nbytes for a in arrays if a is not None)

    @classmethod
    def init(
        cls,
        n_features: int,
        no_components: int,
        optimiser: str,
        rng: np.random.Generator,
    ) -> SideParams:
        """Initialise a side the way LightFM does.

        Embeddings are uniform in ``[-0.5, 0.5) / no_components`` (small, so
        initial scores are near zero and no item starts ahead), biases are 0,
        adagrad accumulators 1 and adadelta accumulators 0.

        Parameters
        ----------
        n_features : int
            Number of feature rows (``n_users`` / ``n_items`` with identity
            features).
        no_components : int
            Embedding dimension.
        optimiser : {'adagrad', 'adadelta'}
            Decides which accumulators are allocated and their start value.
        rng : np.random.Generator
            Source of the initial embeddings; the same seed gives the same side.

        Returns
        -------
        SideParams

        Raises
        ------
        ConfigError
            If a size is negative/zero or the optimiser is unknown.
        """
        if int(n_features) < 0:
            raise ConfigError(f"n_features: got {n_features}; expected >= 0.")
        if int(no_components) < 1:
            raise ConfigError(f"no_components: got {no_components}; expected >= 1.")
        if optimiser not in OPTIMISERS:
            raise ConfigError(f"optimiser: got {optimiser!r}; expected one of {OPTIMISERS}.")
        shape = (int(n_features), int(no_components))
        embeddings = rng.random(shape, dtype=np.float32)
        embeddings -= np.float32(0.5)
        embeddings /= np.float32(no_components)
        biases = np.zeros(shape[0], dtype=np.float32)
        if optimiser == "adagrad":
            return cls(
                embeddings=embeddings,
                biases=biases,
                emb_accum=np.ones(shape, dtype=np.float32),
                bias_accum=np.ones(shape[0], dtype=np.float32),
            )
        return cls(
            embeddings=embeddings,
            biases=biases,
            emb_accum=np.zeros(shape, dtype=np.float32),
            bias_accum=np.zeros(shape[0], dtype=np.float32),
            emb_delta_accum=np.zeros(shape, dtype=np.float32),
            bias_delta_accum=np.zeros(shape[0], dtype=np.float32),
        )

    @property
    def n_features(self) -> int:
        """Number of feature rows."""
        return int(self.embeddings.shape[0])

    @property
    def no_components(self) -> int:
        """Embedding dimension."""
        return int(self.embeddings.shape[1])

    @property
    def optimiser(self) -> str:
        """``'adadelta'`` if the update accumulators are present, else ``'adagrad'``."""
        return "adagrad" if self.emb_delta_accum is None else "adadelta"

    def copy(self) -> SideParams:
        """Return a deep copy (every array copied), e.g. to compute deltas later."""
        return dataclasses.replace(
            self,
            **{
                name: None if getattr(self, name) is None else getattr(self, name).copy()
                for name in _ARRAY_FIELDS
            },
        )

    def rows(self, start: int, stop: int | None = None) -> SideParams:
        """Rows ``start:stop`` of every array (copies), e.g. a shard's own users out of its working side."""
        return SideParams.from_dict({name: a[start:stop].copy() for name, a in self.to_dict().items()})

    @classmethod
    def concatenate(cls, parts: list[SideParams]) -> SideParams:
        """Rows of ``parts`` stacked in order (same optimiser and dimension), e.g. own users then shared features."""
        return cls.from_dict({name: np.concatenate([p.to_dict()[name] for p in parts])
                              for name in parts[0].to_dict()})

    def to_dict(self) -> dict[str, npt.NDArray[np.float32]]:
        """Return the arrays by field name, omitting absent (``None``) accumulators.

        The arrays are the live ones, not copies, so a broadcast or ``np.savez``
        costs no extra memory; call :meth:`copy` first if you need a snapshot.
        """
        return {
            name: getattr(self, name)
            for name in _ARRAY_FIELDS
            if getattr(self, name) is not None
        }

    @classmethod
    def from_dict(cls, arrays: dict[str, np.ndarray]) -> SideParams:
        """Rebuild a side from :meth:`to_dict` output (e.g. a loaded ``.npz``).

        Arrays are converted to C-contiguous float32 (copying only if needed).

        Raises
        ------
        DataValidationError
            If a key is unknown or missing, or the shapes are inconsistent.
        """
        unknown = sorted(set(arrays) - set(_ARRAY_FIELDS))
        if unknown:
            raise DataValidationError(
                f"SideParams.from_dict: unknown keys {unknown}; expected a subset of "
                f"{list(_ARRAY_FIELDS)}."
            )
        missing = [name for name in _ARRAY_FIELDS[:4] if name not in arrays]
        if missing:
            raise DataValidationError(
                f"SideParams.from_dict: missing keys {missing}; a side always has "
                "embeddings, biases, emb_accum and bias_accum."
            )
        return cls(
            **{
                name: np.ascontiguousarray(value, dtype=np.float32)
                for name, value in arrays.items()
            }
        )

    def _validate(self) -> None:
        if self.embeddings.ndim != 2:
            raise DataValidationError(
                f"SideParams.embeddings: expected a 2-d array, got shape {self.embeddings.shape}."
            )
        n, k = self.embeddings.shape
        expected = {
            "embeddings": (n, k),
            "biases": (n,),
            "emb_accum": (n, k),
            "bias_accum": (n,),
            "emb_delta_accum": (n, k),
            "bias_delta_accum": (n,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is None:
                continue
            if value.shape != shape or value.dtype != np.float32 or not value.flags.c_contiguous:
                raise DataValidationError(
                    f"SideParams.{name}: got {value.dtype} array of shape {value.shape}; "
                    f"expected C-contiguous float32 of shape {shape}."
                )
        if (self.emb_delta_accum is None) != (self.bias_delta_accum is None):
            raise DataValidationError(
                "SideParams: emb_delta_accum and bias_delta_accum must both be set "
                "(adadelta) or both be None (adagrad)."
            )
