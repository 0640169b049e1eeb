"""DeepCache as HunyuanCustom does it: at exactly 30 steps, 8 steps reuse the input of the last single block.

On a cached step the model runs only the embeddings it needs for vec, the last single block (with the new vec)
and the final layer; the input of that block comes from the previous full step.
"""

from __future__ import annotations

DEEPCACHE_NUM_STEPS = 30
# The release's full steps at 30 steps: 0..10, 13, 16, 19, 22..29; all others reuse the cache.
_FULL_STEPS_AT_30 = frozenset([*range(11), 13, 16, 19, *range(22, 30)])


def deepcache_cached_steps(num_steps: int, *, enabled: bool = True) -> frozenset[int]:
    """Indices of the steps that reuse the cache; empty unless enabled and `num_steps` is 30 (the release's rule)."""
    if not enabled or num_steps != DEEPCACHE_NUM_STEPS:
        return frozenset()
    return frozenset(range(num_steps)) - _FULL_STEPS_AT_30
