"""Prompt templates of the LLaVA-Llama-3 text encoder, as the released HunyuanVideo / HunyuanCustom checkpoints
were trained with them."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class PromptTemplate:
    """A system + user chat template with one `{}` for the prompt.

    `crop_start` is the number of tokens (with the tokenizer's BOS) before the prompt; the encoder drops those
    positions from the hidden states so that only the user's words (and image tokens) reach the DiT.
    """

    name: str
    text: str
    crop_start: int

    def format(self, prompt: str) -> str:
        """The templated text of `prompt`."""
        return self.text.format(prompt)

    @property
    def prefix(self) -> str:
        """The part before the prompt (what `crop_start` counts)."""
        return self.text.split("{}", 1)[0]

    def with_crop_start(self, crop_start: int) -> PromptTemplate:
        """The same text measured by another tokenizer."""
        return replace(self, crop_start=crop_start)


_SYSTEM_HEADER = "<|start_header_id|>system<|end_header_id|>\n\n"
_USER_TURN = "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"

VIDEO_TEMPLATE = PromptTemplate(
    name="dit-llm-encode-video",
    text=_SYSTEM_HEADER + "Describe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:" + _USER_TURN,
    crop_start=95,
)

# used by the T2V model when video_length == 1
IMAGE_TEMPLATE = PromptTemplate(
    name="dit-llm-encode",
    text=_SYSTEM_HEADER
    + "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships "
    "of the objects and background:" + _USER_TURN,
    crop_start=36,
)

# HunyuanCustom appends one of these per subject, after the final <|eot_id|>; "\n" stands where the paper
# speaks of a <SEP> token, as in the released code.
IDENTITY_SUFFIX = "\nThe {word} looks like<image>"
DEFAULT_SUBJECT_WORD = "object"
# the word of the negative (unconditional) branch's suffix: the release's `text2tokens(..., name='person')`
# default, which the negative prompt is tokenized with whatever the subject is
NEGATIVE_SUBJECT_WORD = "person"
IMAGE_TOKEN = "<image>"

# the tokenizer's max length is text_len + crop_start
TEXT_LEN = 256

NEGATIVE_PROMPT = (
    "Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, "
    "bad teeth, bad eyes, bad limbs, distortion"
)


def identity_prompt(templated: str, subject_words: list[str] | tuple[str, ...]) -> str:
    """Append the identity suffix of each subject, in order, to an already templated prompt."""
    return templated + "".join(IDENTITY_SUFFIX.format(word=w) for w in subject_words)
