"""The text conditioning of one render: LLaVA states + CLIP pooled, conditional and unconditional."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model_core.text.clip import ClipPooledEncoder
from model_core.text.conditioning import TextConditioning
from model_core.text.llava import LlavaTextEncoder
from model_core.text.templates import NEGATIVE_SUBJECT_WORD


def encode_prompt(
    llava: LlavaTextEncoder,
    clip: ClipPooledEncoder,
    prompt: str,
    subject_words: Sequence[str] = (),
    identity_images: Sequence[np.ndarray] = (),
) -> TextConditioning:
    """The conditional branch of one prompt: LLaVA with one identity image per subject word (none for T2V),
    CLIP-L of the plain prompt."""
    if len(subject_words) != len(identity_images):
        raise ValueError(
            f"{len(subject_words)} subject words but {len(identity_images)} identity images; give one image "
            "per subject"
        )
    pixels = llava.identity_pixel_values(identity_images) if identity_images else None
    states = llava.encode([prompt], subject_words, pixels)
    return TextConditioning(states.states, states.mask, clip.encode([prompt]))


def encode_negative(
    llava: LlavaTextEncoder,
    clip: ClipPooledEncoder,
    negative_prompt: str,
    subject_words: Sequence[str] = (),
    negative_word: str | None = NEGATIVE_SUBJECT_WORD,
) -> TextConditioning:
    """The unconditional branch: the negative prompt with one `"\\nThe person looks like<image>"` suffix per
    subject (as released; `negative_word=None` repeats the subject words), white identity images, image tokens
    dropped."""
    states = llava.encode_unconditional([negative_prompt], subject_words, negative_word)
    return TextConditioning(states.states, states.mask, clip.encode([negative_prompt]))
