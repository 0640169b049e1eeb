"""Ulysses sequence parallelism over a torch.distributed group (gloo on CPU, NCCL on GPU).

`HunyuanDiT.forward(..., sp=group)` splits the DiT forward over a group with these pieces;
`model_core.sampling.sample` is the entry point that uses it.
"""

from model_core.parallel.attention import JointAttentionFn, UlyssesJointAttention
from model_core.parallel.group import ParallelLayout, SPGroup
from model_core.parallel.launch import free_port, run_local_world
from model_core.parallel.split import SequenceShard
from model_core.parallel.ulysses import gather_heads, heads_to_seq, seq_to_heads, slice_heads
from model_core.parallel.volume import CommVolume, forward_volume, release_audio_gather_volume

__all__ = [
    "CommVolume",
    "JointAttentionFn",
    "ParallelLayout",
    "SPGroup",
    "SequenceShard",
    "UlyssesJointAttention",
    "forward_volume",
    "free_port",
    "gather_heads",
    "heads_to_seq",
    "release_audio_gather_volume",
    "run_local_world",
    "seq_to_heads",
    "slice_heads",
]
