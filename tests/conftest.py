"""Test configuration: the whole suite runs under JAX's strictest numpy promotion rules.

Strict dtype promotion refuses implicit casts (bfloat16 + float32, say), and rank promotion
``raise`` refuses implicit broadcasting between arrays of different ranks, so any hidden cast
or broadcast in jadam fails a test here rather than drifting a user's dtypes.
"""

import jax
import pytest
from hypothesis import settings

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

# jit compilation makes the first example of each test slow; hypothesis must not call that flaky.
settings.register_profile("jadam", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("jadam")


@pytest.fixture
def standard_promotion():
    """For code outside jadam that does not pass strict promotion (optax's own Adam, say)."""
    with jax.numpy_dtype_promotion("standard"):
        yield
