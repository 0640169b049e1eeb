"""DeepCache as the releases do it: some steps reuse the input of the last single block from the last full step.

On a cached step the model runs only the embeddings it needs for vec, the last single block (with the new vec)
and the final layer; the input of that block comes from the previous full step. HunyuanCustom caches 8 of 30
steps and only at exactly 30 steps; HunyuanVideo-Avatar has its own list of full steps
(Tencent-Hunyuan/HunyuanVideo-Avatar, hymm_sp/diffusion/pipelines/pipeline_hunyuan_video_audio.py).
"""

from __future__ import annotations

DEEPCACHE_NUM_STEPS = 30
# The release's full steps at 30 steps: 0..10, 13, 16, 19, 22..29; all others reuse the cache.
_FULL_STEPS_AT_30 = frozenset([*range(11), 13, 16, 19, *range(22, 30)])
# Avatar's full steps: 0..15, every fifth step to 35, then 40..49 (its list is written for 50 steps and applied
# to whatever step count runs: any other step reuses the cache).
AVATAR_FULL_STEPS = frozenset([*range(16), 20, 25, 30, 35, *range(40, 50)])


def deepcache_cached_steps(num_steps: int, *, enabled: bool = True) -> frozenset[int]:
    """Indices of the steps that reuse the cache; empty unless enabled and `num_steps` is 30 (the release's rule)."""
    if not enabled or num_steps != DEEPCACHE_NUM_STEPS:
        return frozenset()
    return frozenset(range(num_steps)) - _FULL_STEPS_AT_30


def avatar_cached_steps(num_steps: int, *, enabled: bool = True) -> frozenset[int]:
    """Avatar's cached steps: every step below `num_steps` outside `AVATAR_FULL_STEPS` (16-19, 21-24, ... at 50)."""
    if not enabled:
        return frozenset()
    return frozenset(range(num_steps)) - AVATAR_FULL_STEPS
