"""The render DAG of one shard, as data: the local runner and the KFP pipeline both walk this list.

Each stage runs the step module ``components.<name>`` with ``--input NAME=<manifest key of an earlier stage>``
for each entry of ``inputs``. ``distributed`` stages run under torchrun (one process per GPU, or N gloo
processes on a CPU machine). ``qc_metrics`` checks and scores the final video between ``tiled_decode`` and
``publish`` (foley plugs in before it: ``qc_metrics`` then also takes ``foley``, the muxed mp4).
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
    Stage("qc_metrics", {"video": "tiled_decode"}),
    Stage(
        "publish",
        {
            "prompts": "prompt_rewrite",
            "text": "llava_encode",
            "cond": "vae_encode",
            "latents": "dit_sample",
            "video": "tiled_decode",
            "qc": "qc_metrics",
        },
    ),
)
