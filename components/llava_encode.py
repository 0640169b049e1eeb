"""llava_encode: the text conditioning of each unit: LLaVA states (with the identity images) and CLIP-L pooled.

Per unit one tensor artifact ``text.safetensors`` holding the positive branch (``cond_*``: the rewritten
prompt with one identity image per subject) and, when the unit runs real CFG, the negative branch
(``uncond_*``: the negative prompt with white identity images, as the release builds it). Identity guidance
reuses the positive text states, so it needs nothing more here. Variants and sizes of a job share the
encode (computed once per shard).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from components.prompt_rewrite import read_prompts
from components.runtime.manifest import StepManifest, UnitOutput, UnitPlan, content_key
from components.runtime.models import load_clip, load_llava
from components.runtime.step import StepContext, shard_step, step_main, unit_loop
from components.runtime.tensors import TensorMeta, dump_tensors

__all__ = ["STEP", "main", "run"]

STEP = "llava_encode"
OUTPUT = "text.safetensors"


def _uses_cfg(unit: UnitPlan) -> bool:
    return float(unit.sampling["cfg_scale"]) > 1.0


def run(ctx: StepContext, shard_key: str, upstream: Mapping[str, str]) -> str:
    """Encode the prompts of a shard (needs ``upstream['prompts']``); returns the step manifest key."""
    if "prompts" not in upstream:
        raise ValueError(f"{STEP} needs --input prompts=<prompt_rewrite manifest key>")

    def work(shard: Any, ups: Mapping[str, StepManifest], telemetry: Any) -> dict[str, UnitOutput]:
        prompts = ups["prompts"]
        encoded: dict[str, bytes] = {}

        def keys_for(unit: UnitPlan) -> dict[str, str]:
            payload = {
                "prompts": prompts.units[unit.unit_id].artifacts["prompts"].sha256,
                "images": [unit.assets.get(uri, uri) for uri in unit.subject_images],
                "cfg": _uses_cfg(unit),
                "models": [unit.models["text_encoder"], unit.models["text_encoder_2"]],
            }
            return {"text": content_key(shard.prefix, shard.campaign_id, unit.unit_id, STEP, payload, OUTPUT)}

        def body(unit: UnitPlan, keys: Mapping[str, str]) -> dict[str, Any]:
            memo = keys["text"].rsplit("/", 2)[-2]  # the content hash: equal for a job's variants and sizes
            if memo not in encoded:
                encoded[memo] = _encode(ctx, shard, unit, read_prompts(ctx, prompts, unit.unit_id))
            ctx.store.put_bytes(keys["text"], encoded[memo], metadata={"format": "safetensors"})
            return {}

        return unit_loop(ctx, shard, STEP, keys_for, body, telemetry=telemetry, upstream=[prompts])

    return shard_step(ctx, STEP, shard_key, upstream, work, model_roles=("text_encoder", "text_encoder_2"))


def _encode(ctx: StepContext, shard: Any, unit: UnitPlan, prompts: Mapping[str, Any]) -> bytes:
    import torch

    from components.runtime.assets import localize
    from model_core.io.ffmpeg_decode import read_image
    from model_core.text import encode_negative, encode_prompt

    llava = load_llava(ctx, shard.pin("text_encoder", unit))
    clip = load_clip(ctx, shard.pin("text_encoder_2", unit))
    images = [read_image(localize(uri, ctx.settings, ctx.scratch("assets"))) for uri in unit.subject_images]
    with torch.no_grad():
        pos = encode_prompt(llava, clip, str(prompts["prompt"]), unit.subject_words, images)
        tensors = {"cond_states": pos.states, "cond_mask": pos.mask, "cond_pooled": pos.pooled}
        if _uses_cfg(unit):
            neg = encode_negative(llava, clip, str(prompts["negative_prompt"]), unit.subject_words)
            tensors |= {"uncond_states": neg.states, "uncond_mask": neg.mask, "uncond_pooled": neg.pooled}
    meta = TensorMeta(
        step=STEP,
        meaning={
            "cond_states": "LLaVA hidden_states[-3] of the prompt with identity images [1, L, D]",
            "cond_mask": "valid-token mask [1, L]",
            "cond_pooled": "CLIP-L pooled prompt [1, D2]",
        },
        model_versions={r: unit.models[r] for r in ("text_encoder", "text_encoder_2")},
        extra={"prompt": str(prompts["prompt"]), "words": unit.subject_words},
    )
    return dump_tensors(
        {
            k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.cpu().contiguous()
            for k, v in tensors.items()
        },
        meta,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return step_main(STEP, run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
