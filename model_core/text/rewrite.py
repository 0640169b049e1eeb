"""Prompt rewrite: a user prompt in any language -> the structured English caption style the model was trained on.

HunyuanVideo's captions (report §4.6) follow one structure: the main subject and its look, the action, the
scene, light and atmosphere, then the camera; in plain words. A chat model does the rewrite, through one of
three backends:

* `openai`: any OpenAI-compatible chat-completions endpoint (vLLM in the cluster), with a timeout and retries;
* `transformers`: a local causal LM with its chat template;
* `none`: the prompt is used as written.

Every rewrite passes a guard (`check_rewrite`): all subject words kept, a length within bounds, English, no
refusal or meta text. A rejected rewrite, or a backend that fails after its retries, falls back to the
original prompt, and the result says why.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import requests
import torch
from torch import nn

SYSTEM_PROMPT = (
    "You rewrite prompts for a text-to-video model. Answer with one English paragraph and nothing else. "
    "Describe, in this order: the main subject and its appearance; what it does; the scene and background; "
    "the light, colours and atmosphere; the shot and camera movement. Use short, simple, concrete sentences. "
    "Keep every person, animal, object, brand name and action of the original, and do not add anything that "
    "changes its meaning. Translate prompts that are not in English."
)

# (user prompt, rewrite) pairs shown to the model before the real prompt
FEW_SHOT: tuple[tuple[str, str], ...] = (
    (
        "女人在浴室里介绍洗发水",
        (
            "A young woman with long dark hair stands in a bright, clean bathroom and holds a bottle of shampoo "
            "toward the camera. She smiles and points at the bottle as she talks about it. White tiles and a large "
            "mirror fill the background. Soft daylight comes in from a window and the mood is fresh and calm. "
            "Medium shot at eye level; the camera stays still."
        ),
    ),
    (
        "dog running beach sunset, cinematic",
        (
            "A golden retriever runs along a sandy beach at sunset, its ears bouncing and its paws kicking up wet "
            "sand. Gentle waves roll onto the shore behind it. The sky glows orange and pink, and warm backlight "
            "outlines the dog's fur. Cinematic wide shot; the camera tracks the dog from the side."
        ),
    ),
)

_REFUSAL = re.compile(
    r"\b(i['’]?m sorry|i am sorry|i apologi[sz]e|i can(?:['’]|no)?t|i cannot|i am unable|i'm unable|as an ai|"
    r"language model|content policy|not able to help)\b",
    re.IGNORECASE,
)
_META = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok|here is|here's|rewritten|revised)\b|(?:prompt|caption)\s*:)"
    r"|\b(?:rewritten prompt|the original prompt|revised prompt)\b",
    re.IGNORECASE,
)


class RewriteBackendError(RuntimeError):
    """The rewrite backend gave no answer (connection, timeout, HTTP error, malformed reply)."""


class RewriteBackendName(str, Enum):
    """The rewrite backends `make_rewriter` builds by name."""

    OPENAI = "openai"
    TRANSFORMERS = "transformers"
    NONE = "none"


@dataclass(frozen=True)
class GuardConfig:
    """Bounds a rewrite must meet to replace the original prompt."""

    min_words: int = 8
    # LLaVA keeps 256 prompt tokens, identity suffixes included; ~180 English words stay inside that
    max_words: int = 180
    max_non_ascii_letters: float = 0.1  # share of letters outside ASCII (an untranslated answer)


@dataclass(frozen=True)
class RewriteResult:
    """The prompt to render and how it came about.

    prompt: what the encoders should get (the rewrite, or the original on fallback).
    rewritten: True when `prompt` is the backend's rewrite.
    candidate: the backend's raw answer, if any.
    reason: why the original was kept (None when rewritten or when the backend is `none`).
    """

    original: str
    prompt: str
    rewritten: bool
    backend: str
    candidate: str | None = None
    reason: str | None = None


class ChatBackend(Protocol):
    """A chat model: messages [{"role", "content"}] -> the assistant's answer."""

    name: str

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The answer; `RewriteBackendError` when the backend gives none."""
        ...


def _word_present(word: str, text: str) -> bool:
    # whole words, case-insensitive, plural endings allowed ("dog" matches "dogs")
    pattern = r"\b" + r"\s+".join(re.escape(w) for w in word.split()) + r"(?:s|es)?\b"
    return re.search(pattern, text, re.IGNORECASE) is not None


def check_rewrite(
    candidate: str, subject_words: Sequence[str] = (), guard: GuardConfig = GuardConfig()
) -> str | None:
    """Why `candidate` must not replace the prompt, or None if it may."""
    text = candidate.strip()
    if not text:
        return "empty answer"
    if _REFUSAL.search(text):
        return "refusal in the answer"
    if _META.search(text):
        return "meta text in the answer"
    missing = [w for w in subject_words if not _word_present(w, text)]
    if missing:
        return f"subject words dropped: {', '.join(missing)}"
    # language before length: whitespace word counts mean nothing for CJK text
    letters = [c for c in text if c.isalpha()]
    foreign = sum(1 for c in letters if not c.isascii()) / max(len(letters), 1)
    if foreign > guard.max_non_ascii_letters:
        return f"not English: {foreign:.0%} non-ASCII letters"
    n_words = len(text.split())
    if n_words < guard.min_words:
        return f"too short: {n_words} words < {guard.min_words}"
    if n_words > guard.max_words:
        return f"too long: {n_words} words > {guard.max_words}"
    return None


def clean_answer(answer: str) -> str:
    """Strip whitespace and one pair of surrounding quotes."""
    text = answer.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text


def build_messages(
    prompt: str,
    subject_words: Sequence[str] = (),
    system_prompt: str = SYSTEM_PROMPT,
    examples: Sequence[tuple[str, str]] = FEW_SHOT,
) -> list[dict[str, str]]:
    """System prompt, few-shot pairs, then the user's prompt (with the subjects it must keep)."""
    messages = [{"role": "system", "content": system_prompt}]
    for user, assistant in examples:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    content = prompt
    if subject_words:
        content += "\n(Keep these subjects by name: " + ", ".join(subject_words) + ".)"
    messages.append({"role": "user", "content": content})
    return messages


class OpenAIChatBackend:
    """An OpenAI-compatible `POST {base_url}/chat/completions` endpoint (vLLM, TGI, OpenAI, ...).

    Connection errors, timeouts, 429 and 5xx answers are retried `retries` times with exponential backoff;
    other HTTP errors fail at once.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        temperature: float = 0.0,
        max_tokens: int = 400,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.temperature = temperature
        self.max_tokens = max_tokens

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The first choice's message content; `RewriteBackendError` when no attempt gives one."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = requests.post(self.url, json=body, headers=headers, timeout=self.timeout_s)
            except requests.Timeout:
                last = f"timed out after {self.timeout_s:g} s"
                continue
            except requests.ConnectionError as exc:
                last = f"cannot connect to {self.url}: {exc.__class__.__name__}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = f"HTTP {resp.status_code} from {self.url}"
                continue
            if resp.status_code != 200:
                raise RewriteBackendError(f"HTTP {resp.status_code} from {self.url}: {resp.text[:200]}")
            try:
                return str(resp.json()["choices"][0]["message"]["content"])
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise RewriteBackendError(f"malformed chat-completions answer from {self.url}") from exc
        raise RewriteBackendError(f"{last} ({self.retries + 1} attempts)")


class TransformersChatBackend:
    """A local causal LM with a chat template; greedy decoding, so a rewrite is reproducible."""

    name = "transformers"

    def __init__(self, model: nn.Module, tokenizer: object, max_new_tokens: int = 256) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
        max_new_tokens: int = 256,
    ) -> TransformersChatBackend:
        """Load a chat LM folder (from the registry cache) from local files."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
        # transformers wraps .to with functools.wraps, whose stub hides the bound self
        model = model.to(device)  # type: ignore[arg-type]
        return cls(model, tokenizer, max_new_tokens)

    @torch.no_grad()
    def complete(self, messages: list[dict[str, str]]) -> str:
        """The newly generated text after the chat template's assistant turn."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise RewriteBackendError("the tokenizer has no chat template; use a chat (instruct) model")
        ids = self.tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        device = next(self.model.parameters()).device
        input_ids = ids["input_ids"].to(device)
        pad = self.tokenizer.pad_token_id  # type: ignore[attr-defined]
        out = self.model.generate(  # type: ignore[operator]
            input_ids=input_ids,
            attention_mask=ids["attention_mask"].to(device),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=pad if pad is not None else self.tokenizer.eos_token_id,  # type: ignore[attr-defined]
        )
        new = out[0, input_ids.shape[1] :]
        return self.tokenizer.decode(new, skip_special_tokens=True)  # type: ignore[attr-defined]


class PromptRewriter:
    """Rewrites prompts with a chat backend (None = `none`) and guards the answers."""

    def __init__(
        self,
        backend: ChatBackend | None,
        guard: GuardConfig = GuardConfig(),
        system_prompt: str = SYSTEM_PROMPT,
        examples: Sequence[tuple[str, str]] = FEW_SHOT,
    ) -> None:
        self.backend = backend
        self.guard = guard
        self.system_prompt = system_prompt
        self.examples = tuple(examples)

    @property
    def backend_name(self) -> str:
        """The backend's name (`none` when there is no backend)."""
        return self.backend.name if self.backend is not None else RewriteBackendName.NONE.value

    def rewrite(self, prompt: str, subject_words: Sequence[str] = ()) -> RewriteResult:
        """The guarded rewrite of `prompt`; the original when the backend is `none`, fails, or is rejected."""
        if self.backend is None:
            return RewriteResult(prompt, prompt, rewritten=False, backend=self.backend_name)
        messages = build_messages(prompt, subject_words, self.system_prompt, self.examples)
        try:
            answer = self.backend.complete(messages)
        except RewriteBackendError as exc:
            return RewriteResult(prompt, prompt, False, self.backend_name, reason=f"backend failed: {exc}")
        candidate = clean_answer(answer)
        reason = check_rewrite(candidate, subject_words, self.guard)
        if reason is not None:
            return RewriteResult(prompt, prompt, False, self.backend_name, candidate=answer, reason=reason)
        return RewriteResult(prompt, candidate, True, self.backend_name, candidate=answer)


def make_rewriter(
    backend: str | RewriteBackendName, guard: GuardConfig = GuardConfig(), **options: object
) -> PromptRewriter:
    """A rewriter for a backend by name. `openai` takes OpenAIChatBackend's arguments (base_url, model, ...);
    `transformers` takes `path` and TransformersChatBackend.from_pretrained's; `none` takes none."""
    try:
        name = RewriteBackendName(backend)
    except ValueError:
        known = ", ".join(repr(b.value) for b in RewriteBackendName)
        raise ValueError(f"unknown rewrite backend {backend!r}; use one of {known}") from None
    if name is RewriteBackendName.NONE:
        if options:
            raise ValueError(f"backend 'none' takes no options, got {sorted(options)}")
        return PromptRewriter(None, guard)
    if name is RewriteBackendName.OPENAI:
        return PromptRewriter(OpenAIChatBackend(**options), guard)  # type: ignore[arg-type]
    return PromptRewriter(TransformersChatBackend.from_pretrained(**options), guard)  # type: ignore[arg-type]
