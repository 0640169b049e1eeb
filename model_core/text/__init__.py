"""Text conditioning: LLaVA text(-image) states, CLIP-L pooled, prompt templates and prompt rewrite."""

from model_core.text.clip import CLIP_MAX_LENGTH, ClipPooledEncoder
from model_core.text.conditioning import TextConditioning
from model_core.text.encode import encode_negative, encode_prompt
from model_core.text.llava import (
    ExpandedSequence,
    ImageMaskMode,
    LlavaStates,
    LlavaTextEncoder,
    compact_valid_prefix,
    expand_image_tokens,
    measure_crop_start,
)
from model_core.text.rewrite import (
    GuardConfig,
    OpenAIChatBackend,
    PromptRewriter,
    RewriteBackendError,
    RewriteBackendName,
    RewriteResult,
    TransformersChatBackend,
    build_messages,
    check_rewrite,
    make_rewriter,
)
from model_core.text.templates import (
    DEFAULT_SUBJECT_WORD,
    IDENTITY_SUFFIX,
    IMAGE_TEMPLATE,
    NEGATIVE_PROMPT,
    NEGATIVE_SUBJECT_WORD,
    TEXT_LEN,
    VIDEO_TEMPLATE,
    PromptTemplate,
    identity_prompt,
)

__all__ = [
    "CLIP_MAX_LENGTH",
    "DEFAULT_SUBJECT_WORD",
    "IDENTITY_SUFFIX",
    "IMAGE_TEMPLATE",
    "NEGATIVE_PROMPT",
    "NEGATIVE_SUBJECT_WORD",
    "TEXT_LEN",
    "VIDEO_TEMPLATE",
    "ClipPooledEncoder",
    "ExpandedSequence",
    "GuardConfig",
    "ImageMaskMode",
    "LlavaStates",
    "LlavaTextEncoder",
    "OpenAIChatBackend",
    "PromptRewriter",
    "PromptTemplate",
    "RewriteBackendError",
    "RewriteBackendName",
    "RewriteResult",
    "TextConditioning",
    "TransformersChatBackend",
    "build_messages",
    "check_rewrite",
    "compact_valid_prefix",
    "encode_negative",
    "encode_prompt",
    "expand_image_tokens",
    "identity_prompt",
    "make_rewriter",
    "measure_crop_start",
]
