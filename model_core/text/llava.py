"""LLaVA-Llama-3 text(-image) encoder: the `text_states` and `text_mask` of HunyuanVideo and HunyuanCustom.

T2V: the templated prompt through the language model only; hidden_states[-3] (no final norm), the template
cropped, [B, 256, D].

HunyuanCustom: the same template, then `"\\nThe {word} looks like<image>"` per subject after the final
`<|eot_id|>`. Each `<image>` becomes the 576 projected CLIP-ViT features of that subject's 336x336 image,
giving 351 + 575 positions before the crop and [B, 831, D] after it.

The release ran transformers 4.41.2, whose LLaVA expanded `<image>` inside the model; current transformers
expects a processor to have done it. `expand_image_tokens` re-creates the legacy expansion: the positions of
text and image embeddings, the language model's attention mask and position ids, and zeroed embeddings at
padding tokens.

Text mask (`ImageMaskMode`):
* LEGACY (default, what the released weights were trained with): the returned mask is the tokenizer mask
  followed by 575 ones per image, i.e. the *count* of valid tokens is right (text + all image tokens) but the
  ones sit at the text positions and at the last 575 x K positions, part image tokens and part padding. The
  DiT's main attention only uses the count; its token refiner uses the positions and so sees the quirk.
  Unconditional branch: the first `count - 575 x K` positions are valid, the rest not, which drops the image
  tokens but keeps one `<image>` slot per subject.
* CLEAN: the mask marks exactly the text and image positions. Unconditional branch: every image position is
  masked and the remaining valid tokens are moved to the front, so the valid tokens stay a prefix.

The unconditional (negative) branch writes its identity suffixes with the word "person", one per subject, as
the release tokenizes the negative prompt with `text2tokens`' default `name='person'` (the subject word goes
to the conditional branch only); `encode_unconditional(..., negative_word=None)` uses the subject words.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import torch
from torch import nn

from model_core.text.templates import (
    IMAGE_TOKEN,
    NEGATIVE_SUBJECT_WORD,
    TEXT_LEN,
    VIDEO_TEMPLATE,
    PromptTemplate,
    identity_prompt,
)
from model_core.vision.image import llava_pixels, white_image


class ImageMaskMode(str, Enum):
    """How the text mask of an image-conditioned prompt is built (see the module docstring)."""

    LEGACY = "legacy"
    CLEAN = "clean"


@dataclass(frozen=True)
class LlavaStates:
    """Cropped hidden states [B, L, D] and their mask [B, L] (int64)."""

    states: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class ExpandedSequence:
    """A token sequence with every `<image>` expanded to its image features, as the legacy LLaVA built it.

    embeds:         [B, L + K*(N-1), D] input embeddings for the language model.
    attention_mask: [B, L + K*(N-1)] the tokenizer mask at text positions, 1 at image positions.
    position_ids:   [B, L + K*(N-1)] cumsum(mask) - 1, and 1 where the mask is 0.
    image_positions:[B, L + K*(N-1)] bool, True where an image feature was written.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    image_positions: torch.Tensor


def expand_image_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_embeds: torch.Tensor,
    image_features: torch.Tensor,
    image_token_id: int,
    pad_token_id: int | None = None,
) -> ExpandedSequence:
    """Replace each `<image>` token by its N image features, shifting the following tokens right by N - 1.

    input_ids, attention_mask: [B, L]; token_embeds: [B, L, D]; image_features: [B*K, N, D], ordered row by
    row and, within a row, in the order of the `<image>` tokens. Every row must hold K image tokens.
    Embeddings at `pad_token_id` tokens are zeroed, as the legacy model did.
    """
    b, length = input_ids.shape
    is_image = input_ids == image_token_id  # [B, L]
    counts = is_image.sum(dim=1)
    k = int(counts[0]) if b else 0
    if b and not bool((counts == k).all()):
        raise ValueError(
            f"every prompt must hold the same number of {IMAGE_TOKEN} tokens, got {counts.tolist()}"
        )
    n_images, n_feat, dim = image_features.shape
    if n_images != b * k:
        raise ValueError(
            f"{b} prompts x {k} {IMAGE_TOKEN} tokens need {b * k} images, got {n_images} image feature sets"
        )
    # position of every original token in the expanded sequence; an image token maps to its last slot
    new_pos = torch.cumsum(is_image.long() * (n_feat - 1) + 1, dim=1) - 1  # [B, L]
    out_len = length + k * (n_feat - 1)
    rows = torch.arange(b, device=input_ids.device)[:, None].expand(b, length)
    text = ~is_image

    embeds = token_embeds.new_zeros(b, out_len, dim)
    mask = attention_mask.new_zeros(b, out_len)
    embeds[rows[text], new_pos[text]] = token_embeds[text]
    mask[rows[text], new_pos[text]] = attention_mask[text]
    image_positions = torch.ones(b, out_len, dtype=torch.bool, device=input_ids.device)
    image_positions[rows[text], new_pos[text]] = False
    embeds[image_positions] = image_features.reshape(-1, dim).to(embeds.dtype)
    mask = mask | image_positions.to(mask.dtype)
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    if pad_token_id is not None:
        pad = input_ids == pad_token_id
        embeds[rows[pad], new_pos[pad]] = 0
    return ExpandedSequence(embeds, mask, position_ids, image_positions)


def compact_valid_prefix(states: torch.Tensor, mask: torch.Tensor) -> LlavaStates:
    """Move the valid tokens of each row to the front (order kept), zero the rest, so the mask is a prefix."""
    order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True)  # valid first
    gathered = torch.gather(states, 1, order[..., None].expand_as(states))
    new_mask = torch.gather(mask, 1, order)
    return LlavaStates(gathered * new_mask[..., None].to(gathered.dtype), new_mask)


def measure_crop_start(tokenizer: object, template: PromptTemplate) -> int:
    """Number of tokens (with BOS) the tokenizer makes of the template's text before the prompt."""
    return len(tokenizer(template.prefix, add_special_tokens=True)["input_ids"])  # type: ignore[operator]


class LlavaTextEncoder:
    """Encodes prompts (and identity images) to cropped LLaVA hidden states.

    Args:
        model: a `LlavaForConditionalGeneration` (HunyuanCustom: images allowed), or a bare language model
            (`LlamaModel` / `LlamaForCausalLM`, the HunyuanVideo T2V `text_encoder/`).
        tokenizer: the model's tokenizer; `<image>` must map to the model's image token id.
        template: the prompt template; its `crop_start` is checked against the tokenizer.
        text_len: prompt tokens kept after the crop (tokenizer max length = text_len + crop_start).
        hidden_state_skip_layer: 2 takes hidden_states[-3].
        mask_mode: LEGACY (release behaviour, default) or CLEAN.
        pad_token_id: tokens whose embeddings are zeroed before an image-conditioned forward; default the
            LLaVA config's `pad_token_id` (the legacy model's rule), None when it has none.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: object,
        template: PromptTemplate = VIDEO_TEMPLATE,
        text_len: int = TEXT_LEN,
        hidden_state_skip_layer: int = 2,
        mask_mode: ImageMaskMode = ImageMaskMode.LEGACY,
        pad_token_id: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.text_len = text_len
        self.hidden_state_skip_layer = hidden_state_skip_layer
        self.mask_mode = ImageMaskMode(mask_mode)
        measured = measure_crop_start(tokenizer, template)
        if measured != template.crop_start:
            raise ValueError(
                f"template {template.name!r} says crop_start={template.crop_start} but this tokenizer makes "
                f"{measured} tokens of its prefix; use the tokenizer the template was measured with or "
                f"template.with_crop_start({measured})"
            )
        inner = getattr(model, "model", None)
        self._vision = inner if inner is not None and hasattr(inner, "get_image_features") else None
        if self._vision is not None:
            # a transformers config; nn.Module.__getattr__ types every attribute as Tensor | Module
            config = cast(Any, model.config)
            self.language_model: nn.Module = self._vision.language_model
            self.image_token_id = int(config.image_token_id)
            token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)  # type: ignore[attr-defined]
            if token_id != self.image_token_id:
                raise ValueError(
                    f"the tokenizer maps {IMAGE_TOKEN} to {token_id} but the model expects "
                    f"{self.image_token_id}; load the tokenizer saved with this LLaVA checkpoint"
                )
            self.image_size = int(config.vision_config.image_size)
            self.pad_token_id = (
                pad_token_id if pad_token_id is not None else getattr(config, "pad_token_id", None)
            )
        else:
            # LlamaForCausalLM keeps the decoder in .model; LlamaModel is the decoder
            self.language_model = inner if isinstance(inner, nn.Module) else model
            self.image_token_id = -1
            self.image_size = 0
            self.pad_token_id = pad_token_id

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        with_vision: bool = True,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str = "cpu",
        **kwargs: object,
    ) -> LlavaTextEncoder:
        """Load a released folder from local files: the full LLaVA (`with_vision`, HunyuanCustom
        `llava-llama-3-8b-v1_1`) or the language model only (HunyuanVideo `text_encoder/`)."""
        from transformers import AutoModel, AutoTokenizer, LlavaForConditionalGeneration

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, padding_side="right")
        model_cls = LlavaForConditionalGeneration if with_vision else AutoModel
        model = model_cls.from_pretrained(path, local_files_only=True, dtype=dtype)
        # transformers wraps .to with functools.wraps, whose stub hides the bound self
        model = model.to(device)  # type: ignore[arg-type]
        return cls(model, tokenizer, **kwargs)  # type: ignore[arg-type]

    @property
    def supports_images(self) -> bool:
        """True for a full LLaVA (identity images allowed), False for a bare language model (T2V)."""
        return self._vision is not None

    @property
    def max_length(self) -> int:
        """The tokenizer's max length: text_len + crop_start (351 for the released template)."""
        return self.text_len + self.template.crop_start

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.model.parameters())
        return p.device, p.dtype

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        self.tokenizer.padding_side = "right"  # type: ignore[attr-defined]
        batch = self.tokenizer(  # type: ignore[operator]
            texts,
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        device, _ = self._device_dtype()
        return batch["input_ids"].to(device), batch["attention_mask"].to(device)

    def _hidden(self, **inputs: torch.Tensor) -> torch.Tensor:
        out = self.language_model(**inputs, output_hidden_states=True)
        return out.hidden_states[-(self.hidden_state_skip_layer + 1)]

    @torch.no_grad()
    def encode(
        self,
        prompts: Sequence[str],
        subject_words: Sequence[str] = (),
        pixel_values: torch.Tensor | None = None,
        unconditional: bool = False,
    ) -> LlavaStates:
        """Encode prompts, with one identity image per subject word when `subject_words` is non-empty.

        prompts: B user prompts (untemplated). subject_words: K words shared by the batch ("woman", "dog").
        pixel_values: [B, K, 3, S, S] LLaVA pixels (see `model_core.vision.llava_pixels`).
        unconditional: drop the image tokens from the mask as the release does for the negative branch.
        Returns states [B, text_len (+ K*(N-1)), D] and mask.
        """
        texts = [self.template.format(p) for p in prompts]
        k = len(subject_words)
        if k != (0 if pixel_values is None else pixel_values.shape[1]):
            raise ValueError(
                f"{k} subject words need pixel_values [B, {k}, 3, S, S], got "
                f"{None if pixel_values is None else tuple(pixel_values.shape)}"
            )
        if k and not self.supports_images:
            raise ValueError(
                "identity images need the full LLaVA model (LlavaTextEncoder.from_pretrained(with_vision=True))"
            )
        texts = [identity_prompt(t, list(subject_words)) for t in texts]
        input_ids, tok_mask = self._tokenize(texts)
        crop = self.template.crop_start
        if k == 0:
            hidden = self._hidden(input_ids=input_ids, attention_mask=tok_mask)
            return LlavaStates(hidden[:, crop:], tok_mask[:, crop:].long())

        assert pixel_values is not None and self._vision is not None
        found = (input_ids == self.image_token_id).sum(dim=1)
        if bool((found != k).any()):
            raise ValueError(
                f"a prompt is too long: after truncation to {self.max_length} tokens it keeps "
                f"{found.min().item()} of its {k} {IMAGE_TOKEN} tokens; shorten the prompt to fit "
                f"{self.text_len} tokens with the identity suffixes"
            )
        device, dtype = self._device_dtype()
        b = input_ids.shape[0]
        if pixel_values.shape[0] != b:
            raise ValueError(f"pixel_values has {pixel_values.shape[0]} rows for {b} prompts")
        feats = self._vision.get_image_features(pixel_values=pixel_values.flatten(0, 1).to(device, dtype))
        image_features = torch.stack(list(feats.pooler_output))  # [B*K, N, D]
        n_feat = image_features.shape[1]
        # a PreTrainedModel method; nn.Module.__getattr__ types it as Tensor | Module
        get_input_embeddings = cast(Callable[[], nn.Module], self.language_model.get_input_embeddings)
        embed = get_input_embeddings()
        token_embeds = embed(input_ids.masked_fill(input_ids == self.image_token_id, 0))
        seq = expand_image_tokens(
            input_ids, tok_mask, token_embeds, image_features, self.image_token_id, self.pad_token_id
        )
        hidden = self._hidden(
            inputs_embeds=seq.embeds, attention_mask=seq.attention_mask, position_ids=seq.position_ids
        )[:, crop:]
        extra = k * (n_feat - 1)
        if self.mask_mode is ImageMaskMode.LEGACY:
            # the release returns the tokenizer mask followed by ones for the added positions
            mask = torch.cat([tok_mask, tok_mask.new_ones(b, extra)], dim=1)[:, crop:].long()
            if unconditional:
                keep = mask.sum(dim=1, keepdim=True) - extra
                mask = (torch.arange(mask.shape[1], device=device)[None] < keep).long()
            return LlavaStates(hidden, mask)
        mask = seq.attention_mask[:, crop:].long()
        if unconditional:
            mask = mask * (~seq.image_positions[:, crop:]).long()
            return compact_valid_prefix(hidden, mask)
        return LlavaStates(hidden, mask)

    def identity_pixel_values(self, images: Sequence[object]) -> torch.Tensor:
        """LLaVA pixels [1, K, 3, S, S] for K identity images (RGB uint8 arrays)."""
        return torch.stack([llava_pixels(img, self.image_size) for img in images])[None]  # type: ignore[arg-type]

    def encode_unconditional(
        self,
        prompts: Sequence[str],
        subject_words: Sequence[str] = (),
        negative_word: str | None = NEGATIVE_SUBJECT_WORD,
    ) -> LlavaStates:
        """The negative branch: one identity suffix per subject with an all-white image, image tokens dropped.

        The suffixes say `negative_word` ("person", the release's default for the negative prompt) once per
        entry of `subject_words`, whose words are not used; `negative_word=None` writes the subject words instead.
        """
        if not subject_words:
            return self.encode(prompts)
        words = list(subject_words) if negative_word is None else [negative_word] * len(subject_words)
        white = llava_pixels(white_image(self.image_size, self.image_size), self.image_size)
        pixels = white[None, None].expand(len(prompts), len(words), *white.shape)
        return self.encode(prompts, words, pixels, unconditional=True)
