"""How recspark's compiled loops (the WARP kernel, top-k and rank selection) are built.

numba's ``njit`` options, and an on-disk cache that survives Spark applications.

numba caches compiled code next to the source (``__pycache__``) or, for a
module imported from a zip -- recspark under ``spark-submit --py-files`` -- in
a per-user cache folder named after the *zip's directory*. Spark copies the
zip into a fresh directory for every application, so each nightly run would
compile the kernel again on every executor (~10-25 s per Python worker).
:class:`StableZipLocator` keys that folder on the module's path inside the zip
instead; numba still checks the source's content hash, so a changed kernel is
recompiled. The cache root is ``$NUMBA_CACHE_DIR`` if set (point it at a
persistent local disk on the executors, e.g. via
``spark.executorEnv.NUMBA_CACHE_DIR``), else numba's per-user cache folder
(``~/.cache/numba``).
"""

from __future__ import annotations

import os

import numba
from numba.core.caching import CacheImpl, ZipCacheLocator

# Reassociation lets LLVM vectorise the dot products and row updates; "afn"/"arcp" allow fast
# reciprocal square roots. NaN/inf semantics are kept (no "nnan"/"ninf"), so a diverging fit
# still shows up as non-finite parameters.
FASTMATH = {"reassoc", "contract", "nsz", "arcp", "afn"}


class StableZipLocator(ZipCacheLocator):
    """numba's zip-module cache locator, with a folder that does not depend on where the zip was unpacked."""

    def __init__(self, py_func, py_file):
        super().__init__(py_func, py_file)
        root = os.environ.get("NUMBA_CACHE_DIR") or os.path.dirname(self._cache_path)  # numba's user cache dir
        self._cache_path = os.path.join(root, "recspark-zip", self._internal_path.replace("/", "_"))

    @classmethod
    def from_function(cls, py_func, py_file):
        if ".zip" not in py_file or not os.path.basename(py_file).endswith(".py"):
            return None
        return cls(py_func, py_file)


if StableZipLocator not in CacheImpl._locator_classes:
    CacheImpl._locator_classes.insert(0, StableZipLocator)

#: A compiled function: no GIL (the kernel's threads run in parallel), cached on disk.
jit = numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
#: The same, inlined into its callers at the numba IR level (small helpers of the inner loop).
inline = numba.njit(nogil=True, cache=True, fastmath=FASTMATH, inline="always")
