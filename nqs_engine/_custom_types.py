"""Array type aliases shared across the package."""

from typing import Union

import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

#: Anything that converts to a real array: a Python number, a NumPy or JAX array.
RealLike = Union[float, int, np.ndarray, Array, ArrayLike]
#: A real-valued JAX array of any shape.
FloatArray = Float[Array, "..."]
#: A scalar real-valued JAX array.
FloatScalar = Float[Array, ""]
#: An integer JAX array of any shape.
IntArray = Int[Array, "..."]

__all__ = ["RealLike", "FloatArray", "FloatScalar", "IntArray"]
