"""Comparing frames of tiny random models: by whole grey levels, never by mere inequality.

Float noise (CPU rounding, thread counts) moves a few pixels of a random model's uint8 output by one
level on some machines and not on others, so `not np.array_equal(a, b)` can pass or fail there
whatever the input did. `level_difference` is the mean absolute difference in grey levels; tests
ask it for more than 1 level where an input must change the output."""
from __future__ import annotations

import numpy as np


def level_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frame arrays, in grey levels."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
