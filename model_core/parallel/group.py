"""Sequence-parallel process groups: who am I in the group, how many ranks, and the CFG-parallel split."""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist
from torch.distributed import ProcessGroup


@dataclass(frozen=True)
class SPGroup:
    """A sequence-parallel (Ulysses) group; `group=None` with degree 1 means no parallelism.

    Collectives go through `group` with the backend it was created with (gloo on CPU, NCCL on GPU).
    """

    group: ProcessGroup | None
    rank: int
    degree: int

    @classmethod
    def single(cls) -> SPGroup:
        """No sequence parallelism."""
        return cls(group=None, rank=0, degree=1)

    @classmethod
    def from_group(cls, group: ProcessGroup | None) -> SPGroup:
        """Wrap an initialised process group (None: the single-rank group; a 1-rank group counts as none)."""
        if group is None:
            return cls.single()
        if not dist.is_initialized():
            raise RuntimeError("a process group was passed but torch.distributed is not initialised")
        degree = dist.get_world_size(group)
        if degree == 1:
            return cls.single()
        return cls(group=group, rank=dist.get_rank(group), degree=degree)

    @property
    def enabled(self) -> bool:
        """More than one rank: collectives run."""
        return self.degree > 1

    def check_heads(self, num_heads: int) -> None:
        """Ulysses hands num_heads / degree heads to each rank, so the degree must divide the head count."""
        if num_heads % self.degree != 0:
            divisors = [d for d in range(1, num_heads + 1) if num_heads % d == 0]
            raise ValueError(
                f"sequence-parallel degree {self.degree} does not divide the {num_heads} attention heads; "
                f"use a degree in {divisors} (or CFG-parallel to halve the degree)"
            )


@dataclass(frozen=True)
class ParallelLayout:
    """How the ranks of one sampling job are used.

    Without CFG-parallel the whole world is one SP group. With it, ranks [0, W/2) run the unconditional
    branch and [W/2, W) the conditional one, each half an SP group; rank r and r + W/2 form a pair that
    exchanges the branch outputs.
    """

    sp: SPGroup
    cfg_pair: ProcessGroup | None
    cfg_index: int  # which CFG branch this rank computes (0 = uncond) when cfg_pair is set

    @property
    def cfg_parallel(self) -> bool:
        """The CFG branches run on the two halves of the ranks."""
        return self.cfg_pair is not None

    @classmethod
    def create(cls, group: ProcessGroup | None, *, cfg_parallel: bool = False) -> ParallelLayout:
        """Build the layout over `group` (None: a single process).

        Every rank of `group` must call this with the same arguments, in the same order relative to other
        group creations (torch.distributed.new_group is collective).
        """
        if not cfg_parallel:
            return cls(sp=SPGroup.from_group(group), cfg_pair=None, cfg_index=0)
        if group is None or not dist.is_initialized():
            raise ValueError(
                "cfg_parallel needs a process group of an even number of ranks (2 or more); got none"
            )
        world = dist.get_world_size(group)
        if world % 2 != 0:
            raise ValueError(f"cfg_parallel needs an even number of ranks, got {world}")
        ranks = dist.get_process_group_ranks(group)
        half = world // 2
        me = dist.get_rank(group)
        sp_groups = [dist.new_group(ranks[:half]), dist.new_group(ranks[half:])]
        pairs = [dist.new_group([ranks[i], ranks[i + half]]) for i in range(half)]
        cfg_index = 0 if me < half else 1
        sp = SPGroup.from_group(sp_groups[cfg_index]) if half > 1 else SPGroup.single()
        return cls(sp=sp, cfg_pair=pairs[me % half], cfg_index=cfg_index)
