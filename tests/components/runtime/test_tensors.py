"""Tensor artifacts: safetensors with an adrender header; pickles are refused."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch

from components.runtime.store import IntegrityError, LocalStore
from components.runtime.tensors import (
    TensorFormatError,
    TensorMeta,
    TensorSpec,
    dump_tensors,
    get_tensors,
    load_tensors,
    put_tensors,
    save_tensors,
)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "latents": torch.randn(1, 16, 5, 6, 10, generator=g).to(torch.bfloat16),
        "text_states": torch.randn(2, 7, 32, generator=g),
        "token_ids": torch.randint(0, 128_000, (2, 7), generator=g, dtype=torch.int64),
    }


META = TensorMeta(
    step="vae_encode",
    meaning={"latents": "identity-image latents [B, C, T, H, W]", "token_ids": "LLaVA input ids [B, L]"},
    model_versions={"hunyuan-vae": "3", "llava-llama-3-8b": "1"},
    extra={"seed": 42, "frames": 129, "note": "tiny"},
)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert tensor.dtype == b[name].dtype, name
        assert torch.equal(tensor, b[name]), name


def test_round_trip_file_and_bytes(tmp_path: Path) -> None:
    tensors = _tensors()
    written = save_tensors(tmp_path / "a" / "latents.safetensors", tensors, META)
    got, meta = load_tensors(tmp_path / "a" / "latents.safetensors")
    _assert_same(got, tensors)
    assert meta == written
    assert meta.step == "vae_encode"
    assert dict(meta.model_versions) == {"hunyuan-vae": "3", "llava-llama-3-8b": "1"}
    assert dict(meta.extra) == {"seed": 42, "frames": 129, "note": "tiny"}
    assert meta.tensors["latents"] == TensorSpec(
        (1, 16, 5, 6, 10), "bfloat16", "identity-image latents [B, C, T, H, W]"
    )
    assert meta.tensors["text_states"] == TensorSpec((2, 7, 32), "float32", "")
    assert meta.tensors["token_ids"].dtype == "int64"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["latents.safetensors"]  # no temp file left

    got2, meta2 = load_tensors(dump_tensors(tensors, META))
    _assert_same(got2, tensors)
    assert meta2 == meta


def test_views_and_non_contiguous_tensors_are_stored_as_values() -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"t": base.t(), "row": base[1], "same": base}  # a transpose and a view sharing base's memory
    got, meta = load_tensors(dump_tensors(tensors, TensorMeta(step="test")))
    _assert_same(got, {k: v.contiguous() for k, v in tensors.items()})
    assert meta.tensors["t"].shape == (6, 4)


def test_store_helpers_round_trip_and_verify(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    info = put_tensors(store, "c/u/vae_encode/h/latents.safetensors", _tensors(), META)
    assert store.stat("c/u/vae_encode/h/latents.safetensors").metadata == {"format": "safetensors"}
    got, meta = get_tensors(store, "c/u/vae_encode/h/latents.safetensors")
    _assert_same(got, _tensors())
    assert meta.step == "vae_encode" and info.size > 0
    # a flipped byte in the store is caught by the store's sha256 before safetensors sees it
    path = store.root / "c/u/vae_encode/h/latents.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        get_tensors(store, "c/u/vae_encode/h/latents.safetensors")


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    data = dump_tensors(_tensors(), META)
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(TensorFormatError, match="cut.safetensors"):
        load_tensors(tmp_path / "cut.safetensors")
    with pytest.raises(TensorFormatError, match="not a safetensors file"):
        load_tensors(data[:50])
    with pytest.raises(TensorFormatError, match="too short"):
        load_tensors(b"\x01\x02")


def test_header_that_disagrees_with_the_data_is_refused() -> None:
    data = dump_tensors({"x": torch.zeros(2, 3)}, TensorMeta(step="s"))
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    inner = json.loads(header["__metadata__"]["adrender"])
    inner["tensors"]["x"]["shape"] = [3, 2]
    header["__metadata__"]["adrender"] = json.dumps(inner)
    new_header = json.dumps(header).encode()
    new_header += b" " * ((8 - len(new_header) % 8) % 8)
    forged = struct.pack("<Q", len(new_header)) + new_header + data[8 + size :]
    with pytest.raises(
        TensorFormatError, match=r"'x' is float32 \(2, 3\) but the header says float32 \(3, 2\)"
    ):
        load_tensors(forged)


def test_plain_safetensors_without_header_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(TensorFormatError, match="without an adrender header"):
        load_tensors(tmp_path / "plain.safetensors")


class _Boom:
    """Unpickling this would run code: the test fails loudly if anything unpickles."""

    def __reduce__(self) -> tuple:
        return (pytest.fail, ("a pickle was loaded",))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_pickle_files_are_refused_without_unpickling(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "weights.bin"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"x": _Boom()}))
    else:
        torch.save({"x": torch.ones(2)}, path)
    with pytest.raises(TensorFormatError, match="never unpickles"):
        load_tensors(path)


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(TensorFormatError, match="at least one tensor"):
        dump_tensors({}, TensorMeta(step="s"))
    with pytest.raises(TensorFormatError, match=r"\['ghost'\]"):
        dump_tensors({"x": torch.ones(1)}, TensorMeta(step="s", meaning={"ghost": "?"}))
    with pytest.raises(TensorFormatError, match="expected torch.Tensor"):
        dump_tensors({"x": [1, 2]}, TensorMeta(step="s"))  # type: ignore[dict-item]


def test_a_header_length_whose_first_byte_is_0x80_is_not_taken_for_a_pickle() -> None:
    # a header of 128 + 256k bytes starts the file with 0x80, the pickle protocol marker
    meta = TensorMeta(step="test", extra={"pad": ""})
    for pad in range(400):
        meta = TensorMeta(step="test", extra={"pad": "x" * pad})
        data = dump_tensors({"x": torch.zeros(2)}, meta)
        if data[:1] == b"\x80":
            break
    assert data[:1] == b"\x80"
    tensors, back = load_tensors(data, name="mem")
    assert torch.equal(tensors["x"], torch.zeros(2)) and back.extra == meta.extra
