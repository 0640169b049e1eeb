"""Tiny random-weight versions of every model a campaign needs, built in-process (no downloads).

Each `tiny-` preset is written as a folder in the format of the released files, so the real loaders read it:

- tiny DiT presets (`model_core.configs.PRESETS`): `mp_rank_00_model_states.pt` holding
  `{"module": state_dict}`, as the official releases; read by `checkpoints.load_model`.
- `tiny-hunyuan-vae`: `config.json` + `diffusion_pytorch_model.safetensors`; `vae.load_vae`.
- `tiny-llava`: LLaVA `save_pretrained` + tokenizer; `text.LlavaTextEncoder.from_pretrained`.
- `tiny-clip`: CLIP text tower `save_pretrained` + tokenizer; `text.ClipPooledEncoder.from_pretrained`.
- `tiny-whisper`: `WhisperModel` `save_pretrained` + feature extractor;
  `audio.WhisperAudioEncoder.from_pretrained`.
- `tiny-hunyuanvideo-foley`: the Foley MMDiT, DAC-VAE and Synchformer files as released
  (`audio.foley.tiny.write_tiny_foley`); `tiny-siglip2` (a `SiglipModel`) and `tiny-clap` (a CLAP text tower +
  tokenizer): Foley's image and text encoders.
- QC models: `tiny-clip-vit-base` (a full `CLIPModel`, both towers, + tokenizer; `qc.ClipScorer`),
  `tiny-dinov2` (`Dinov2Model`; `qc.DinoScorer`), `tiny-arcface` (`config.json` + `model.safetensors` of an
  IResNet with one unit per stage; `qc.IResNet.from_pretrained`), `tiny-face-detector` (`config.json` +
  a scripted YOLOv5-face-contract `detface.pt`; `vision.face_detect.load_face_detector`).

The widths fit the tiny DiT presets: LLaVA hidden 32 = `text_states_dim`, CLIP hidden 16 = `text_pooled_dim`,
Whisper d_model 16 with 4 encoder layers = the audio branch's `whisper_dim` and `whisper_layers` (5 with the
embeddings). Weights are seeded and saving is deterministic: the same preset and seed give the same bytes.

Tokenizers. The folders carry byte-level tokenizers (`llama_byte_tokenizer`, `clip_byte_tokenizer`): every
text encodes, Chinese included (unknown words fall back to their UTF-8 bytes), and Llama-3's pre-tokenizer
split plus one vocabulary entry per piece of the prompt templates make the templates' prefixes exactly as long
as with the released Llama-3 tokenizer (95 and 36 tokens), so `VIDEO_TEMPLATE` and `IMAGE_TEMPLATE` apply
unchanged. The word-level tokenizers (`llama_word_tokenizer`, `clip_word_tokenizer`) know a fixed corpus only;
unit tests use them to tell template tokens apart by word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)

from model_core.configs import AVATAR_PRESETS, ENCODER_PRESETS, FOLEY_RELEASES, PRESETS, dit_preset
from model_core.text.templates import (
    DEFAULT_SUBJECT_WORD,
    IDENTITY_SUFFIX,
    IMAGE_TEMPLATE,
    NEGATIVE_PROMPT,
    NEGATIVE_SUBJECT_WORD,
    VIDEO_TEMPLATE,
)
from model_core.vae.config import VAE_PRESETS

if TYPE_CHECKING:
    from model_core.qc.arcface import IResNet

__all__ = [
    "CORPUS",
    "DIT_FILE",
    "LLAMA_SPECIALS",
    "TINY_MODELS",
    "clip_byte_tokenizer",
    "clip_word_tokenizer",
    "llama_byte_tokenizer",
    "llama_word_tokenizer",
    "tiny_arcface",
    "tiny_clip",
    "tiny_dinov2",
    "tiny_dit_state_dict",
    "tiny_llava",
    "tiny_qc_clip",
    "tiny_whisper",
    "write_tiny_model",
]

# registered model name -> tiny preset: the names are the campaign spec's default model references
TINY_MODELS: Mapping[str, str] = {
    "hunyuancustom-dit": "tiny-hunyuancustom-720p",
    "hunyuancustom-audio-dit": "tiny-hunyuancustom-audio-720p",
    "hunyuancustom-editing-dit": "tiny-hunyuancustom-editing-720p",
    "hunyuanvideo-t2v-dit": "tiny-hunyuanvideo-t2v-720p",
    "hunyuanvideo-avatar-dit": "tiny-hunyuanvideo-avatar-704p",
    "hunyuan-vae": "tiny-hunyuan-vae",
    "llava-llama-3-8b": "tiny-llava",
    "clip-vit-large": "tiny-clip",
    "whisper-tiny": "tiny-whisper",
    # QC models (model_core.qc), resolved by qc_metrics as <name>@production
    "clip-vit-base-patch32": "tiny-clip-vit-base",
    "dinov2-base": "tiny-dinov2",
    "arcface-r100": "tiny-arcface",
    "face-detector": "tiny-face-detector",
    "hunyuanvideo-foley": "tiny-hunyuanvideo-foley",
    "siglip2-base-patch16-512": "tiny-siglip2",
    "larger-clap-general": "tiny-clap",
}

DIT_FILE = "mp_rank_00_model_states.pt"  # the name the official DiT releases use

LLAMA_SPECIALS = (
    "<pad>",
    "<unk>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<image>",
)
CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>", "<unk>")
# Text whose words get their own tokens: the templates, the negative prompt, the identity suffixes and a few
# advertising sentences. Anything else is spelled in bytes (byte tokenizers) or is <unk> (word tokenizers).
CORPUS = (
    VIDEO_TEMPLATE.text,
    IMAGE_TEMPLATE.text,
    NEGATIVE_PROMPT,
    "A woman in a red coat holds a bottle of shampoo and smiles at the camera in a bright bathroom .",
    "A man and a dog walk along a beach at sunset , the camera follows them slowly .",
    "The woman looks like The man dog object person red panda looks like",
    "a cat sleeps",
)
_AD_SENTENCES = (
    IDENTITY_SUFFIX.format(word=DEFAULT_SUBJECT_WORD),
    IDENTITY_SUFFIX.format(word=NEGATIVE_SUBJECT_WORD),
    IDENTITY_SUFFIX.format(word="woman"),
    IDENTITY_SUFFIX.format(word="man"),
    IDENTITY_SUFFIX.format(word="bottle"),
    (
        "Realistic, High-quality. A woman in a bright bathroom holds up a green shampoo bottle, smiles at "
        "the camera and runs a hand through her shiny hair."
    ),
    "Realistic, High-quality. A man talks to the camera in a sunny kitchen and holds a shampoo bottle.",
    "Realistic, High-quality. A hand places a green bottle on a marble shelf next to fresh towels.",
    "Realistic, High-quality. Morning light over a meadow of wild flowers, dew drops on green leaves.",
)
# Llama-3's pre-tokenizer split (its tokenizer.json): contractions, words with one leading non-letter, up to
# three digits, punctuation runs, newlines, spaces.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
LLAVA_HIDDEN = 32  # = the tiny DiT's text_states_dim
CLIP_HIDDEN = 16  # = the tiny DiT's text_pooled_dim


# ---------------------------------------------------------------------------------------------------------
# tokenizers


def _without(text: str, specials: Iterable[str]) -> list[str]:
    """The pieces of `text` between special tokens."""
    pattern = "|".join(re.escape(s) for s in specials)
    return [part for part in re.split(pattern, text) if part]


def _words(texts: Iterable[str], specials: Iterable[str]) -> list[str]:
    pre = pre_tokenizers.Whitespace()
    words = {w for text in texts for part in _without(text, specials) for w, _ in pre.pre_tokenize_str(part)}
    return sorted(words)


def _fast(tok: Tokenizer, **kwargs: object) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)  # type: ignore[arg-type]


def _llama_fast(tok: Tokenizer, vocab: Mapping[str, int]) -> PreTrainedTokenizerFast:
    """BOS first, right padding, `<image>` as the image token: what the LLaVA encoder expects."""
    tok.add_special_tokens(list(LLAMA_SPECIALS))
    bos = vocab["<|begin_of_text|>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
    )
    return _fast(
        tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        extra_special_tokens={"image_token": "<image>"},
    )


def _clip_fast(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """CLIP's framing: <|startoftext|> ... <|endoftext|>, padded with <|endoftext|>."""
    tok.add_special_tokens(list(CLIP_SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)],
    )
    return _fast(
        tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )


def llama_word_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer of `CORPUS` with the Llama-3 special tokens the templates use; other words are
    <unk>."""
    vocab = {tok: i for i, tok in enumerate(LLAMA_SPECIALS)}
    for w in _words(CORPUS, LLAMA_SPECIALS):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return _llama_fast(tok, vocab)


def clip_word_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level, lower-cased tokenizer of `CORPUS` framed like CLIP's; other words are <unk>."""
    vocab = {tok: i for i, tok in enumerate(CLIP_SPECIALS)}
    for w in _words(CORPUS, LLAMA_SPECIALS):
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.normalizer = normalizers.Lowercase()
    return _clip_fast(tok)


def _byte_level_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _byte_level(
    specials: tuple[str, ...], texts: Iterable[str], lower: bool
) -> tuple[Tokenizer, dict[str, int]]:
    """A byte-level BPE without merges: the specials, the 256 byte symbols, then every piece of `texts` whole.

    `ignore_merges` makes a piece found in the vocabulary one token; any other piece falls back to its bytes.
    """
    pre = _byte_level_pre_tokenizer()
    vocab = {tok: i for i, tok in enumerate(specials)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    pieces = {
        piece
        for text in texts
        for part in _without(text.lower() if lower else text, (*specials, *LLAMA_SPECIALS))
        for piece, _ in pre.pre_tokenize_str(part)
    }
    for piece in sorted(pieces):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.BPE(vocab, [], ignore_merges=True))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    if lower:
        tok.normalizer = normalizers.Lowercase()
    return tok, vocab


def llama_byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer with Llama-3's split and special tokens: any text encodes; template pieces are
    whole tokens, so the templates' crop starts are the released ones (95 for video, 36 for image)."""
    tok, vocab = _byte_level(LLAMA_SPECIALS, CORPUS + _AD_SENTENCES, lower=False)
    return _llama_fast(tok, vocab)


def clip_byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level, lower-cased tokenizer framed like CLIP's: any text encodes, known words are one token
    each."""
    tok, _ = _byte_level(CLIP_SPECIALS, CORPUS + _AD_SENTENCES, lower=True)
    return _clip_fast(tok)


# ---------------------------------------------------------------------------------------------------------
# models


def tiny_llava(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlavaForConditionalGeneration:
    """A random LLaVA: 4-layer Llama (hidden 32) + 2-layer CLIP ViT at 336 px / patch 14 (576 image
    tokens)."""
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=LLAVA_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        # the template, 256 prompt tokens and 575 more per identity image
        max_position_embeddings=4096,
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
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    assert isinstance(image_token, int)
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=image_token,
        projector_hidden_act="gelu",
    )
    config.pad_token_id = tokenizer.pad_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlavaForConditionalGeneration(config).eval()


def tiny_clip(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> CLIPTextModel:
    """A random 2-layer CLIP text tower of width 16 (the tiny DiT's pooled width)."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=CLIP_HIDDEN,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=CLIP_HIDDEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(config).eval()


def tiny_qc_clip(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> CLIPModel:
    """A random CLIP with both towers (1 layer each, width 16, 32-pixel images in 8-pixel patches): the QC
    twin of CLIP ViT-B/32."""
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(config).eval()


def tiny_dinov2(seed: int = 0) -> Dinov2Model:
    """A random 1-layer DINOv2 of width 16 on 32-pixel images in 8-pixel patches."""
    config = Dinov2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=32,
        patch_size=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Dinov2Model(config).eval()


def tiny_arcface(seed: int = 0) -> IResNet:
    """A random ArcFace IResNet with one unit per stage, widths 8-32 and a 16-d embedding, on 112-pixel faces."""
    from model_core.qc.arcface import ArcFaceConfig, IResNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return IResNet(ArcFaceConfig(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16, 32), embedding_dim=16)).eval()


def tiny_whisper(seed: int = 0) -> WhisperModel:
    """A random Whisper of width 16 with 4 encoder layers: the tiny audio DiT's feature format (5 x 16)."""
    audio = PRESETS["tiny-hunyuancustom-audio-720p"].audio
    assert audio is not None
    config = WhisperConfig(
        d_model=audio.whisper_dim,
        encoder_layers=audio.whisper_layers - 1,  # the hidden states are the embeddings + each layer
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        max_source_positions=1500,  # 30 s of audio
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WhisperModel(config).eval()


def tiny_dit_state_dict(preset: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The fp32 state dict (official key names) of a randomly initialised tiny DiT preset."""
    from model_core.dit import HunyuanDiT

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HunyuanDiT(dit_preset(preset))
        for adapter in getattr(model, "audio_adapter_blocks", []):
            adapter.to_out.reset_parameters()  # Avatar's adapters start at zero; a tiny model should hear the audio
    # the default init leaves no layer at zero, so the output varies with every input; keep it that way
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    zero = [k for k, v in state.items() if v.is_floating_point() and k.endswith("weight") and not v.any()]
    if zero:
        raise RuntimeError(f"tiny DiT {preset!r} has all-zero weights after init: {', '.join(zero[:5])}")
    return state


# ---------------------------------------------------------------------------------------------------------
# folders


def _tiny_presets() -> list[str]:
    names = (*PRESETS, *AVATAR_PRESETS, *VAE_PRESETS, *ENCODER_PRESETS, *FOLEY_RELEASES)
    return sorted(n for n in names if n.startswith("tiny-"))


def write_tiny_model(role_preset: str, folder: str | Path, seed: int = 0) -> Path:
    """Write the random tiny model of preset `role_preset` into `folder` (created) in its released format.

    The same preset and seed always give the same files, byte for byte. Returns the folder.
    """
    folder = Path(folder)
    if role_preset not in _tiny_presets():
        raise ValueError(
            f"no tiny model for preset {role_preset!r}; tiny presets: {', '.join(_tiny_presets())}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a progress bar per few-kB file is noise
    try:
        _write(role_preset, folder, seed)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return folder


def _write(role_preset: str, folder: Path, seed: int) -> None:
    if role_preset in PRESETS or role_preset in AVATAR_PRESETS:
        torch.save({"module": tiny_dit_state_dict(role_preset, seed)}, folder / DIT_FILE)
    elif role_preset in FOLEY_RELEASES:
        from model_core.audio.foley.tiny import write_tiny_foley

        write_tiny_foley(role_preset, folder, seed)
    elif role_preset in VAE_PRESETS:
        from model_core.vae import CausalVAE3D
        from model_core.vae.loading import save_vae

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = CausalVAE3D(VAE_PRESETS[role_preset]).eval()
        save_vae(vae, folder)
    else:
        family = ENCODER_PRESETS[role_preset].family
        if family == "llava":
            tokenizer = llama_byte_tokenizer()
            tiny_llava(tokenizer, seed).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        elif family == "clip-text":
            tokenizer = clip_byte_tokenizer()
            tiny_clip(tokenizer, seed).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        elif family == "siglip2":
            from model_core.audio.foley.tiny import tiny_siglip2

            tiny_siglip2(seed).save_pretrained(folder)
        elif family == "clap":
            from model_core.audio.foley.tiny import tiny_clap

            tokenizer = clip_byte_tokenizer()
            tiny_clap(tokenizer, seed).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        elif family == "qc-clip":
            tokenizer = clip_byte_tokenizer()
            tiny_qc_clip(tokenizer, seed).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        elif family == "qc-dinov2":
            tiny_dinov2(seed).save_pretrained(folder)
        elif family == "qc-arcface":
            from safetensors.torch import save_file

            from model_core.qc.arcface import ARCFACE_FILE

            model = tiny_arcface(seed)
            model.config.to_json(folder / "config.json")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / ARCFACE_FILE)
        elif family == "qc-face-detector":
            import json

            from model_core.vision.face_detect import (
                DETECTOR_FILE,
                save_face_detector,
                tiny_face_detector_module,
            )

            (folder / "config.json").write_text(json.dumps({"model_type": "yolov5-face"}) + "\n")
            save_face_detector(tiny_face_detector_module(seed), folder / DETECTOR_FILE)
        else:
            tiny_whisper(seed).save_pretrained(folder)
            WhisperFeatureExtractor().save_pretrained(folder)
