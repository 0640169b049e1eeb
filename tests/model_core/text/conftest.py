"""Tiny random LLaVA / Llama / CLIP models and small word-level tokenizers built in-process (no downloads).

The builders live in `model_core.tiny_models`; these tests use its word-level tokenizers, which tell the
template's words apart (the released folders carry its byte-level ones).
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    CLIPTextModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from model_core.text.llava import measure_crop_start
from model_core.text.templates import VIDEO_TEMPLATE
from model_core.tiny_models import clip_word_tokenizer, llama_word_tokenizer, tiny_clip, tiny_llava


@pytest.fixture(scope="session")
def llama_tokenizer() -> PreTrainedTokenizerFast:
    return llama_word_tokenizer()


@pytest.fixture(scope="session")
def clip_tokenizer() -> PreTrainedTokenizerFast:
    return clip_word_tokenizer()


@pytest.fixture(scope="session")
def video_template(llama_tokenizer: PreTrainedTokenizerFast):
    """The video template measured with the tiny tokenizer."""
    return VIDEO_TEMPLATE.with_crop_start(measure_crop_start(llama_tokenizer, VIDEO_TEMPLATE))


@pytest.fixture(scope="session")
def llava_model(llama_tokenizer: PreTrainedTokenizerFast) -> LlavaForConditionalGeneration:
    torch.set_num_threads(2)
    return tiny_llava(llama_tokenizer)


@pytest.fixture(scope="session")
def clip_model(clip_tokenizer: PreTrainedTokenizerFast) -> CLIPTextModel:
    return tiny_clip(clip_tokenizer)


CHAT_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_chat_lm(
    llama_tokenizer: PreTrainedTokenizerFast,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random 2-layer Llama chat LM and the tiny tokenizer with a Llama-3-style chat template."""
    tokenizer = copy.deepcopy(llama_tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval(), tokenizer
