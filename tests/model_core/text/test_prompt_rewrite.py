"""Prompt rewrite: a real local chat-completions server with scripted answers, a tiny random transformers LM,
and the guard."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from model_core.text.rewrite import (
    FEW_SHOT,
    SYSTEM_PROMPT,
    GuardConfig,
    OpenAIChatBackend,
    PromptRewriter,
    RewriteBackendError,
    TransformersChatBackend,
    check_rewrite,
    make_rewriter,
)

GOOD = (
    "A young woman in a red coat stands in a bright bathroom and holds a bottle of shampoo toward the camera. "
    "She smiles and talks about it. White tiles fill the background under soft daylight. Medium shot, static camera."
)
DROPPED = (
    "A person stands in a bright bathroom and holds a bottle toward the camera while smiling warmly at it."
)
REFUSAL = "I'm sorry, but I can't help with rewriting this prompt."


class ScriptedChat(BaseHTTPRequestHandler):
    """Answers by a keyword in the last user message: GOOD, DROP, REFUSE, SLOW, FLAKY (503 once), QUOTED,
    BADREQ (400), MALFORMED (200 without choices)."""

    requests: ClassVar[list[dict]] = []
    flaky_seen: ClassVar[set[str]] = set()

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        user = body["messages"][-1]["content"]
        if "FLAKY" in user and user not in self.flaky_seen:
            self.flaky_seen.add(user)
            self.send_response(503)
            self.end_headers()
            return
        if "SLOW" in user:
            time.sleep(1.5)
        if "BADREQ" in user:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"error": "bad model"}')
            return
        if "MALFORMED" in user:
            self._reply(200, b'{"id": "x", "choices": []}')
            return
        answer = GOOD
        if "DROP" in user:
            answer = DROPPED
        elif "REFUSE" in user:
            answer = REFUSAL
        elif "QUOTED" in user:
            answer = f'"{GOOD}"'
        payload = {"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]}  # fmt: skip
        self._reply(200, json.dumps(payload).encode())

    def _reply(self, status: int, data: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left: what SLOW is for
            pass


@pytest.fixture(scope="module")
def chat_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedChat)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _rewriter(url: str, **kwargs: object) -> PromptRewriter:
    options = {
        "base_url": url,
        "model": "qwen-chat",
        "api_key": "k-123",
        "timeout_s": 5.0,
        "retries": 1,
        "backoff_s": 0.01,
    }
    options.update(kwargs)
    return make_rewriter("openai", **options)


# --- openai backend on a real loopback server ----------------------------------------------------------------------


def test_good_answer_is_used_and_request_is_well_formed(chat_server: str) -> None:
    ScriptedChat.requests.clear()
    result = _rewriter(chat_server).rewrite("GOOD 女人在浴室里介绍洗发水", ["woman"])
    assert result.rewritten and result.prompt == GOOD and result.reason is None and result.backend == "openai"
    req = ScriptedChat.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k-123"
    body = req["body"]
    assert body["model"] == "qwen-chat" and body["temperature"] == 0.0
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system"] + ["user", "assistant"] * len(FEW_SHOT) + ["user"]
    assert body["messages"][0]["content"] == SYSTEM_PROMPT
    assert (
        body["messages"][-1]["content"].startswith("GOOD 女人") and "woman" in body["messages"][-1]["content"]
    )


def test_subject_dropping_answer_falls_back(chat_server: str) -> None:
    result = _rewriter(chat_server).rewrite("DROP a woman shows shampoo", ["woman", "shampoo"])
    assert not result.rewritten and result.prompt == "DROP a woman shows shampoo"
    assert result.reason == "subject words dropped: woman, shampoo"
    assert result.candidate == DROPPED


def test_refusal_falls_back(chat_server: str) -> None:
    result = _rewriter(chat_server).rewrite("REFUSE something", [])
    assert not result.rewritten and result.reason == "refusal in the answer"


def test_slow_server_times_out_and_falls_back(chat_server: str) -> None:
    ScriptedChat.requests.clear()
    start = time.monotonic()
    result = _rewriter(chat_server, timeout_s=0.3, retries=1).rewrite("SLOW a woman", ["woman"])
    assert not result.rewritten and result.prompt == "SLOW a woman"
    assert result.reason is not None and "timed out after 0.3 s (2 attempts)" in result.reason
    assert len(ScriptedChat.requests) == 2
    assert time.monotonic() - start < 1.5


def test_server_error_is_retried(chat_server: str) -> None:
    ScriptedChat.requests.clear()
    result = _rewriter(chat_server, retries=2).rewrite("FLAKY woman shampoo", ["woman"])
    assert result.rewritten and len(ScriptedChat.requests) == 2


def test_client_error_is_not_retried(chat_server: str) -> None:
    ScriptedChat.requests.clear()
    backend = OpenAIChatBackend(chat_server, "m", retries=3, backoff_s=0.01)
    with pytest.raises(RewriteBackendError, match="HTTP 400"):
        backend.complete([{"role": "user", "content": "BADREQ"}])
    assert len(ScriptedChat.requests) == 1


def test_malformed_answer_falls_back_without_retry(chat_server: str) -> None:
    ScriptedChat.requests.clear()
    result = _rewriter(chat_server, retries=2).rewrite("MALFORMED a woman", ["woman"])
    assert not result.rewritten and result.prompt == "MALFORMED a woman"
    assert result.reason is not None and result.reason.startswith(
        "backend failed: malformed chat-completions"
    )
    assert len(ScriptedChat.requests) == 1


def test_make_rewriter_names_the_backends() -> None:
    with pytest.raises(
        ValueError, match="unknown rewrite backend 'vllm'; use one of 'openai', 'transformers'"
    ):
        make_rewriter("vllm")
    with pytest.raises(ValueError, match="takes no options"):
        make_rewriter("none", model="m")


def test_unreachable_server_falls_back() -> None:
    rewriter = make_rewriter(
        "openai", base_url="http://127.0.0.1:9/v1", model="m", retries=1, backoff_s=0.01, timeout_s=1
    )
    result = rewriter.rewrite("a woman", ["woman"])
    assert not result.rewritten and "cannot connect" in (result.reason or "")


def test_quoted_answer_is_unquoted(chat_server: str) -> None:
    result = _rewriter(chat_server).rewrite("QUOTED woman", ["woman"])
    assert result.rewritten and result.prompt == GOOD


def test_none_backend_keeps_the_prompt() -> None:
    result = make_rewriter("none").rewrite("一只猫", ["cat"])
    assert result == result.__class__("一只猫", "一只猫", rewritten=False, backend="none")


# --- the guard -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "words", "reason"),
    [
        (GOOD, ["woman", "bottle"], None),
        ("Two dogs run across a green field in the warm evening light, wide shot.", ["dog"], None),  # plural
        ("Sure! " + GOOD, ["woman"], "meta text in the answer"),
        ("Here is the rewritten prompt: " + GOOD, ["woman"], "meta text in the answer"),
        ("As an AI language model I cannot do that.", [], "refusal in the answer"),
        ("A woman smiles.", ["woman"], "too short: 3 words < 8"),
        (" ".join(["woman"] * 181), ["woman"], "too long: 181 words > 180"),
        (
            "一位年轻女子在明亮的浴室里拿着洗发水对着镜头微笑 woman smiles at the camera now",
            ["woman"],
            "not English",
        ),
        ("", [], "empty answer"),
        ("A red panda climbs a tree in a quiet misty forest at dawn, close-up shot.", ["red panda"], None),
        (
            "A red fox and a panda climb a tree in a quiet misty forest at dawn.",
            ["red panda"],
            "subject words dropped",
        ),
    ],
)
def test_guard(answer: str, words: list[str], reason: str | None) -> None:
    got = check_rewrite(answer, words, GuardConfig())
    if reason is None:
        assert got is None
    else:
        assert got is not None and got.startswith(reason)


# --- transformers backend with a tiny random LM ----------------------------------------------------------------------


def test_transformers_backend_garbage_is_caught(tiny_chat_lm) -> None:
    model, tokenizer = tiny_chat_lm
    backend = TransformersChatBackend(model, tokenizer, max_new_tokens=12)
    result = PromptRewriter(backend).rewrite("A woman in a red coat holds a bottle of shampoo .", ["woman"])
    assert result.backend == "transformers"
    assert result.candidate is not None  # the model did answer
    assert len(result.candidate.split()) <= 12  # only the new tokens, not the templated prompt
    assert "Describe" not in result.candidate and "rewrite" not in result.candidate
    assert not result.rewritten and result.reason is not None
    assert result.prompt == "A woman in a red coat holds a bottle of shampoo ."


def test_transformers_backend_is_deterministic_and_sees_the_template(tiny_chat_lm) -> None:
    model, tokenizer = tiny_chat_lm
    backend = TransformersChatBackend(model, tokenizer, max_new_tokens=6)
    messages = [{"role": "user", "content": "a cat sleeps"}]
    assert backend.complete(messages) == backend.complete(messages)
    no_template = copy.deepcopy(tokenizer)
    no_template.chat_template = None
    with pytest.raises(RewriteBackendError, match="no chat template"):
        TransformersChatBackend(model, no_template).complete(messages)
