"""The render DAG of one shard, as data: the local runner and the KFP pipeline both walk this list.

Each stage runs the step module ``components.<name>`` with ``--input NAME=<manifest key of an earlier stage>``
for each entry of ``inputs``. ``distributed`` stages run under torchrun (one process per GPU, or N gloo
processes on a CPU machine). Foley and QC plug in as two more stages between ``tiled_decode`` and ``publish``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["STAGES", "Stage"]


@dataclass(frozen=True)
class Stage:
    name: str  # the step module under components/
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> upstream stage
    distributed: bool = False


STAGES: tuple[Stage, ...] = (
    Stage("prompt_rewrite"),
    Stage("llava_encode", {"prompts": "prompt_rewrite"}),
    Stage("vae_encode"),
    Stage("dit_sample", {"text": "llava_encode", "cond": "vae_encode"}, distributed=True),
    Stage("tiled_decode", {"latents": "dit_sample"}, distributed=True),
    Stage(
        "publish",
        {
            "prompts": "prompt_rewrite",
            "text": "llava_encode",
            "cond": "vae_encode",
            "latents": "dit_sample",
            "video": "tiled_decode",
        },
    ),
)
