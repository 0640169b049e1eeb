"""The render DAG of one shard, as data: the local runner and the KFP pipeline both walk this list.

Each stage runs the step module ``components.<name>`` with ``--input NAME=<manifest key of an earlier stage>``
for each entry of ``inputs``. ``distributed`` stages run under torchrun (one process per GPU, or N gloo
processes on a CPU machine). ``v2a_foley`` adds the soundtrack to the decoded video (or passes it on where foley
is off); ``qc_metrics`` checks and scores that final mp4 before ``publish``.
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
    Stage("v2a_foley", {"video": "tiled_decode"}),
    Stage("qc_metrics", {"video": "tiled_decode", "foley": "v2a_foley"}),
    Stage(
        "publish",
        {
            "prompts": "prompt_rewrite",
            "text": "llava_encode",
            "cond": "vae_encode",
            "latents": "dit_sample",
            "video": "tiled_decode",
            "foley": "v2a_foley",
            "qc": "qc_metrics",
        },
    ),
)
