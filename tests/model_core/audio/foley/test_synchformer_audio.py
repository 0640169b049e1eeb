"""Synchformer's audio branch: the log-mel input against a DFT written from the formulas, the released AST key
names on transformers' ASTModel, and the frequency aggregation against a hand-written encoder layer."""

from __future__ import annotations

import math

import numpy as np
import torch
from foley_testing import layer_norm
from transformers import ASTModel

from model_core.audio.foley.synchformer_audio import (
    AST_MEAN,
    AST_STD,
    ASTFeatures,
    AudioBranchConfig,
    audio_segments,
    log_mel,
    mel_filterbank,
    normalized_spectrogram,
    released_ast_key,
    transformers_ast_key,
)

TINY = AudioBranchConfig(dim=32, depth=2, num_heads=2, mlp_dim=64)


def _htk(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _filterbank_reference(n_freqs: int = 513, n_mels: int = 128, sr: int = 16000) -> np.ndarray:
    """Triangles between consecutive HTK-mel-spaced edges from 0 Hz to sr/2, peak 1, one band at a time."""
    top = _htk(sr / 2)
    edges = [700.0 * (10 ** (top * i / (n_mels + 1) / 2595.0) - 1.0) for i in range(n_mels + 2)]
    fb = np.zeros((n_freqs, n_mels))
    for j in range(n_freqs):
        f = j * (sr / 2) / (n_freqs - 1)
        for m in range(n_mels):
            lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
            if lo <= f <= mid:
                fb[j, m] = (f - lo) / (mid - lo)
            elif mid < f <= hi:
                fb[j, m] = (hi - f) / (hi - mid)
    return fb


def _log_mel_reference(x: np.ndarray) -> np.ndarray:
    """Centred frames (reflect padding 512), a 400-sample periodic Hann window in the middle of a 1024-point
    DFT, hop 160, power, HTK mel, log(+1e-6)."""
    padded = np.pad(x, 512, mode="reflect")
    window = np.zeros(1024)
    n = np.arange(400)
    window[312:712] = 0.5 - 0.5 * np.cos(2 * np.pi * n / 400)
    frames = 1 + (len(x) - 0) // 160
    power = np.stack(
        [np.abs(np.fft.rfft(padded[i * 160 : i * 160 + 1024] * window)) ** 2 for i in range(frames)], axis=1
    )
    return np.log(_filterbank_reference().T @ power + 1e-6)


def test_mel_filterbank_matches_the_formula() -> None:
    np.testing.assert_allclose(mel_filterbank().numpy(), _filterbank_reference(), atol=5e-5)  # float32 edges


def test_log_mel_and_normalisation_match_a_dft_reference() -> None:
    rng = np.random.default_rng(0)
    tone = np.sin(2 * np.pi * 440 * np.arange(10240) / 16000) * 0.5
    x = (tone + 0.05 * rng.standard_normal(10240)).astype(np.float32)
    got = log_mel(torch.from_numpy(x)).double().numpy()
    assert got.shape == (128, 65)
    np.testing.assert_allclose(got, _log_mel_reference(x.astype(np.float64)), atol=2e-3)
    spec = normalized_spectrogram(torch.from_numpy(x)[None, None])
    assert spec.shape == (1, 1, 66, 128)  # (time, mel)
    np.testing.assert_allclose(spec[0, 0, :65].numpy(), ((got - AST_MEAN) / (2 * AST_STD)).T, atol=2e-4)
    # the 66th frame is a zero log value, normalised
    torch.testing.assert_close(spec[0, 0, 65], torch.full((128,), -AST_MEAN / (2 * AST_STD)))


def test_audio_segments_follow_the_video_segments() -> None:
    wave = torch.arange(80000.0)[None]
    seg = audio_segments(wave)
    assert seg.shape == (1, 14, 10240)
    assert seg[0, 3, 0].item() == 3 * 5120


def test_released_ast_names_map_onto_transformers_ast_model() -> None:
    model = ASTFeatures(TINY)
    plain = ASTModel(TINY.ast_config())
    current = set(plain.state_dict())
    released = {k.removeprefix("ast.") for k in model.state_dict() if k.startswith("ast.")}
    assert "encoder.layer.1.attention.attention.query.weight" in released
    assert "encoder.layer.0.output.dense.bias" in released
    assert {transformers_ast_key(k) for k in released} == current
    assert {released_ast_key(k) for k in current} == released
    assert transformers_ast_key("encoder.layer.11.intermediate.dense.weight") == "layers.11.mlp.fc1.weight"
    assert transformers_ast_key("embeddings.position_embeddings") == "embeddings.position_embeddings"


def _aggregate_reference(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> torch.Tensor:
    """A pre-norm encoder layer (eps 1e-6, GELU) with a CLS in front; returns the CLS output."""
    x = torch.cat([sd["cls_token"].expand(x.shape[0], 1, -1), x], 1)
    b, n, d = x.shape
    h = layer_norm(x, 1e-6) * sd["norm1.weight"] + sd["norm1.bias"]
    q, k, v = (h @ sd["self_attn.in_proj_weight"].T + sd["self_attn.in_proj_bias"]).chunk(3, -1)
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    att = ((q @ k.transpose(-1, -2)) / math.sqrt(d // heads)).softmax(-1) @ v
    att = (
        att.transpose(1, 2).reshape(b, n, d) @ sd["self_attn.out_proj.weight"].T
        + sd["self_attn.out_proj.bias"]
    )
    x = x + att
    h = layer_norm(x, 1e-6) * sd["norm2.weight"] + sd["norm2.bias"]
    h = torch.nn.functional.gelu(h @ sd["linear1.weight"].T + sd["linear1.bias"])
    return (x + h @ sd["linear2.weight"].T + sd["linear2.bias"])[:, 0]


def test_features_are_ast_tokens_aggregated_over_frequency() -> None:
    torch.manual_seed(0)
    model = ASTFeatures(TINY).double().eval()
    with torch.no_grad():
        model.freq_attn_agg.cls_token.normal_()
    state = model.state_dict()
    plain = ASTModel(TINY.ast_config()).double().eval()
    plain.load_state_dict(
        {transformers_ast_key(k.removeprefix("ast.")): v for k, v in state.items() if k.startswith("ast.")}
    )
    # a reload under the released names gives the same module
    again = ASTFeatures(TINY).double().eval()
    again.load_state_dict(state, strict=True)
    spec = torch.randn(2, 66, 128, dtype=torch.float64)
    with torch.no_grad():
        got = model(spec)
        hidden = plain(input_values=spec).last_hidden_state[:, 2:]  # [B, 12 * 6, D], frequency-major
        agg = {
            k.removeprefix("freq_attn_agg."): v for k, v in state.items() if k.startswith("freq_attn_agg.")
        }
        want = torch.stack(
            [_aggregate_reference(agg, hidden[:, [f * 6 + t for f in range(12)]], heads=2) for t in range(6)],
            1,
        )
        torch.testing.assert_close(again(spec), got)
    assert got.shape == (2, 6, 32)
    torch.testing.assert_close(got, want)
