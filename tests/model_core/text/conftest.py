"""Tiny random LLaVA / Llama / CLIP models and small word-level tokenizers built in-process (no downloads)."""

from __future__ import annotations

import copy

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from model_core.text.llava import measure_crop_start
from model_core.text.templates import IMAGE_TEMPLATE, NEGATIVE_PROMPT, VIDEO_TEMPLATE

LLAMA_SPECIALS = [
    "<pad>",
    "<unk>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<image>",
]
CORPUS = [
    VIDEO_TEMPLATE.text,
    IMAGE_TEMPLATE.text,
    NEGATIVE_PROMPT,
    "A woman in a red coat holds a bottle of shampoo and smiles at the camera in a bright bathroom .",
    "A man and a dog walk along a beach at sunset , the camera follows them slowly .",
    "The woman looks like The man dog object person red panda looks like",
    "a cat sleeps",
]
HIDDEN = 32


def _words(texts: list[str], specials: list[str]) -> list[str]:
    pre = pre_tokenizers.Whitespace()
    words: list[str] = []
    for text in texts:
        for s in specials:
            text = text.replace(s, " ")
        words += [w for w, _ in pre.pre_tokenize_str(text)]
    return sorted(set(words))


def llama_like_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer with the Llama-3 special tokens the templates use; BOS added, right padding."""
    vocab = {tok: i for i, tok in enumerate(LLAMA_SPECIALS)}
    for w in _words(CORPUS, LLAMA_SPECIALS):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(LLAMA_SPECIALS)
    bos = vocab["<|begin_of_text|>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        extra_special_tokens={"image_token": "<image>"},
    )


def clip_like_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer shaped like CLIP's: <|startoftext|> ... <|endoftext|>, padded with <|endoftext|>."""
    specials = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in _words(CORPUS, LLAMA_SPECIALS):
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers import normalizers

    tok.normalizer = normalizers.Lowercase()
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )


def tiny_llava(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlavaForConditionalGeneration:
    """A random LLaVA: 4-layer Llama (hidden 32) + 2-layer CLIP ViT at 336 px / patch 14 (576 image tokens)."""
    torch.manual_seed(seed)
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=336,
        patch_size=14,
    )
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
    )
    config.pad_token_id = tokenizer.pad_token_id
    return LlavaForConditionalGeneration(config).eval()


def tiny_clip(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,  # = the tiny DiT's text_pooled_dim
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=16,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval()


@pytest.fixture(scope="session")
def llama_tokenizer() -> PreTrainedTokenizerFast:
    return llama_like_tokenizer()


@pytest.fixture(scope="session")
def clip_tokenizer() -> PreTrainedTokenizerFast:
    return clip_like_tokenizer()


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
