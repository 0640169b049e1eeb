"""prompt_rewrite: the prompt each unit is rendered with, rewritten by a chat model when one is configured.

The backend comes from the environment (``ADRENDER_REWRITE_BACKEND``: ``none`` (default), ``openai`` with
``ADRENDER_REWRITE_URL`` and ``ADRENDER_REWRITE_MODEL``, or ``transformers`` with ``ADRENDER_REWRITE_PATH``).
A rewrite that drops a subject word or fails the guard keeps the original prompt, and says why. Every variant
and size of a job shares one rewrite.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from components.runtime.manifest import StepManifest, UnitOutput, UnitPlan, content_key
from components.runtime.step import StepContext, shard_step, step_main, unit_loop

__all__ = ["STEP", "main", "run"]

STEP = "prompt_rewrite"
OUTPUT = "prompts.json"


def _payload(ctx: StepContext, unit: UnitPlan) -> dict[str, Any]:
    return {
        "prompt": unit.prompt,
        "negative_prompt": unit.negative_prompt,
        "words": unit.subject_words,
        "backend": ctx.rewrite_backend,
        "options": {k: v for k, v in sorted(ctx.rewrite_options.items()) if k != "api_key"},
    }


def run(ctx: StepContext, shard_key: str, upstream: Mapping[str, str] | None = None) -> str:
    """Rewrite the prompts of a shard; returns the key of the step manifest."""

    def work(shard: Any, ups: Mapping[str, StepManifest], telemetry: Any) -> dict[str, UnitOutput]:
        rewriter = None
        done: dict[str, bytes] = {}  # one rewrite per (prompt, words) within the shard

        def keys_for(unit: UnitPlan) -> dict[str, str]:
            return {
                "prompts": content_key(
                    shard.prefix, shard.campaign_id, unit.unit_id, STEP, _payload(ctx, unit), OUTPUT
                )
            }

        def body(unit: UnitPlan, keys: Mapping[str, str]) -> dict[str, Any]:
            nonlocal rewriter
            memo = json.dumps([unit.prompt, unit.subject_words])
            if memo not in done:
                if rewriter is None:
                    from model_core.text import GuardConfig, make_rewriter

                    rewriter = make_rewriter(ctx.rewrite_backend, GuardConfig(), **dict(ctx.rewrite_options))
                result = rewriter.rewrite(unit.prompt, unit.subject_words)
                done[memo] = json.dumps(
                    {
                        "original": unit.prompt,
                        "prompt": result.prompt,
                        "rewritten": result.rewritten,
                        "backend": result.backend,
                        "reason": result.reason,
                        "negative_prompt": unit.negative_prompt,
                    },
                    ensure_ascii=False,
                    indent=1,
                ).encode()
            ctx.store.put_bytes(keys["prompts"], done[memo])
            return {"rewritten": json.loads(done[memo])["rewritten"]}

        return unit_loop(ctx, shard, STEP, keys_for, body, telemetry=telemetry)

    return shard_step(ctx, STEP, shard_key, upstream or {}, work)


def read_prompts(ctx: StepContext, manifest: StepManifest, unit_id: str) -> dict[str, Any]:
    """The prompts record of one unit."""
    out = manifest.ok(unit_id)
    if out is None:
        raise ValueError(f"{STEP} has no output for {unit_id}")
    data: dict[str, Any] = json.loads(ctx.store.get_bytes(out.artifacts["prompts"].key))
    return data


def main(argv: Sequence[str] | None = None) -> int:
    return step_main(STEP, lambda ctx, shard, ups: run(ctx, shard, ups), argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
