"""Checkpoint files: memory-mapped safetensors, weights_only .bin, shards, atomic and sharded writes, bad files."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from pretrained import weights
from pretrained.hub import Source
from pretrained.weights import (CheckpointError, find_weights, parse_size, read_weights, shard,
                                write_weights)


def mapped_ranges(path: str) -> list[tuple[int, int]]:
    """Address ranges where this process has `path` memory-mapped (Linux /proc/self/maps)."""
    real = os.path.realpath(path)
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].strip() == real:
                start, end = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((start, end))
    return ranges


def in_mapping(tensor: torch.Tensor, ranges) -> bool:
    return any(start <= tensor.data_ptr() < end for start, end in ranges)


def small_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(16, 8, generator=g), "a.bias": torch.randn(16, generator=g),
            "b.weight": torch.randn(32, 8, generator=g), "ids": torch.arange(10)[None],
            "c.half": torch.randn(4, 4, generator=g).half()}


def listing(folder) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def assert_same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


# -- reading ---------------------------------------------------------------------------------------------------
def test_safetensors_are_memory_mapped_not_copied(minilm_dir):
    path = os.path.join(minilm_dir, "model.safetensors")
    state, origin = read_weights([path])
    ranges = mapped_ranges(path)
    assert ranges, "the file is not memory-mapped"
    assert len(state) == 104 and all(in_mapping(t, ranges) for t in state.values())
    assert set(origin.values()) == {path}
    assert state["embeddings.word_embeddings.weight"].shape == (30522, 384)


def test_find_weights_prefers_safetensors(tmp_path):
    state = small_state()
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    torch.save(small_state(1), tmp_path / "pytorch_model.bin")
    paths = find_weights(Source(tmp_path))
    assert paths == [str(tmp_path / "model.safetensors")]
    assert_same_state(read_weights(paths)[0], state)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reads_pytorch_model_bin(tmp_path, zip_format):
    state = small_state()
    torch.save(state, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
    paths = find_weights(Source(tmp_path))
    assert paths == [str(tmp_path / "pytorch_model.bin")]
    assert_same_state(read_weights(paths)[0], state)


def test_bin_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"a.weight": torch.zeros(2), "evil": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refusing to load") as info:
        read_weights(find_weights(Source(tmp_path)))
    assert str(tmp_path / "pytorch_model.bin") in str(info.value)
    assert not marker.exists(), "unpickling ran code"


def test_bin_without_tensors_is_refused(tmp_path):
    torch.save({"a.weight": torch.zeros(2), "step": 3}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="mapping of names to tensors") as info:
        read_weights([str(tmp_path / "pytorch_model.bin")])
    assert "pytorch_model.bin" in str(info.value)


def test_truncated_bin_names_the_file(tmp_path):
    torch.save(small_state(), tmp_path / "pytorch_model.bin")
    data = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        read_weights([str(tmp_path / "pytorch_model.bin")])
    assert str(tmp_path / "pytorch_model.bin") in str(info.value)


def test_sharded_safetensors_from_transformers(hf_checkpoint, tmp_path):
    import transformers

    model = transformers.BertForMaskedLM.from_pretrained(hf_checkpoint("BertForMaskedLM"))
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(n for n in os.listdir(tmp_path) if n.endswith(".safetensors"))
    assert len(shards) > 2 and "model.safetensors.index.json" in os.listdir(tmp_path)
    paths = find_weights(Source(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == shards
    state, origin = read_weights(paths)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(state) == sorted(index)
    assert all(os.path.basename(origin[k]) == index[k] for k in state)
    expected = model.state_dict()
    for key, tensor in state.items():
        assert torch.equal(tensor, expected[key]), key


def write_bin_shards(state: dict, folder, n: int = 2) -> list[str]:
    """Shards and index as transformers 4.x wrote them with safe_serialization=False."""
    keys = list(state)
    names = [f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin" for i in range(n)]
    weight_map = {}
    for i, name in enumerate(names):
        part = {k: state[k] for k in keys[i::n]}
        torch.save(part, os.path.join(folder, name))
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    with open(os.path.join(folder, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return names


def test_sharded_bin(tmp_path):
    state = small_state()
    names = write_bin_shards(state, tmp_path)
    paths = find_weights(Source(tmp_path))
    assert [os.path.basename(p) for p in paths] == names
    assert_same_state(read_weights(paths)[0], state)


def test_index_naming_a_missing_shard(tmp_path):
    names = write_bin_shards(small_state(), tmp_path)
    os.remove(tmp_path / names[1])
    with pytest.raises(CheckpointError) as info:
        find_weights(Source(tmp_path))
    message = str(info.value)
    assert names[1] in message and "pytorch_model.bin.index.json" in message


@pytest.mark.parametrize("content", ['{"weight_map": ', '{"metadata": {}}', '{"weight_map": {"a": "../x.bin"}}'])
def test_invalid_index(tmp_path, content):
    (tmp_path / "model.safetensors.index.json").write_text(content)
    with pytest.raises(CheckpointError, match="model.safetensors.index.json"):
        find_weights(Source(tmp_path))


def test_key_in_two_shards(tmp_path):
    save_file({"a": torch.zeros(2)}, tmp_path / "one.safetensors")
    save_file({"a": torch.ones(2)}, tmp_path / "two.safetensors")
    with pytest.raises(CheckpointError, match="'a'.*one.safetensors.*two.safetensors"):
        read_weights([str(tmp_path / "one.safetensors"), str(tmp_path / "two.safetensors")])


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="has no weights") as info:
        find_weights(Source(tmp_path))
    assert str(tmp_path) in str(info.value) and "model.safetensors" in str(info.value)
    assert "pytorch_model.bin" in str(info.value)


def test_truncated_safetensors_names_the_file(tmp_path, minilm_dir):
    data = open(os.path.join(minilm_dir, "model.safetensors"), "rb").read()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors file") as info:
        read_weights(find_weights(Source(tmp_path)))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("damage", ["header_json", "header_length", "empty"])
def test_corrupt_safetensors_names_the_file(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    save_file(small_state(), path, metadata={"format": "pt"})
    data = bytearray(path.read_bytes())
    if damage == "header_json":
        data[8:20] = b"#" * 12
    elif damage == "header_length":
        data[:8] = (2**40).to_bytes(8, "little")
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        read_weights([str(path)])
    assert str(path) in str(info.value)


# -- writing ---------------------------------------------------------------------------------------------------
def test_writes_safetensors_by_default(tmp_path):
    state = small_state()
    assert write_weights(state, str(tmp_path)) == ["model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    assert_same_state(load_file(tmp_path / "model.safetensors"), state)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:  # the save id marks the files of one save
        assert f.metadata()["format"] == "pt" and set(f.metadata()) == {"format", "pretrained_save_id"}


def test_writes_bin_without_safe_serialization(tmp_path):
    state = small_state()
    assert write_weights(state, str(tmp_path), safe_serialization=False) == ["pytorch_model.bin"]
    assert_same_state(torch.load(tmp_path / "pytorch_model.bin", weights_only=True), state)


@pytest.mark.parametrize("safe", [True, False])
def test_writes_shards_above_max_shard_size(tmp_path, safe):
    state = small_state()  # 512 + 64 + 1024 + 80 + 32 bytes
    written = write_weights(state, str(tmp_path), safe_serialization=safe, max_shard_size=1000)
    ext, index_name = (".safetensors", "model.safetensors.index.json") if safe else (".bin", "pytorch_model.bin.index.json")
    stem = "model" if safe else "pytorch_model"
    shards = [n for n in written if n.endswith(ext)]
    assert shards == [f"{stem}-{i:05d}-of-{len(shards):05d}{ext}" for i in range(1, len(shards) + 1)]
    assert len(shards) == 3 and written[-1] == index_name
    assert sorted(os.listdir(tmp_path)) == sorted(written)
    index = json.loads((tmp_path / index_name).read_text())
    assert index["metadata"]["total_size"] == 512 + 64 + 1024 + 80 + 32
    assert sorted(index["weight_map"]) == sorted(state) and set(index["weight_map"].values()) == set(shards)
    for name in shards:  # each shard at most max_shard_size, unless one tensor alone is larger
        part = read_weights([str(tmp_path / name)])[0]
        size = sum(t.numel() * t.element_size() for t in part.values())
        assert size <= 1000 or len(part) == 1
    assert_same_state(read_weights(find_weights(Source(tmp_path)))[0], state)


def test_shard_and_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("10MiB") == 10 * 2**20 and parse_size(123) == 123
    assert parse_size("1.5kb") == 1500
    for bad in ("lots", "-1GB", 0, "5 parsecs"):
        with pytest.raises(ValueError, match="max_shard_size"):
            parse_size(bad)
    groups = shard({"a": torch.zeros(10), "b": torch.zeros(10), "c": torch.zeros(100)}, 80)
    assert [list(g) for g in groups] == [["a", "b"], ["c"]]


def test_shared_storage_is_written(tmp_path):
    w = torch.randn(4, 4)
    write_weights({"a": w, "b": w, "c": w[1]}, str(tmp_path))
    state = read_weights([str(tmp_path / "model.safetensors")])[0]
    assert torch.equal(state["a"], w) and torch.equal(state["b"], w) and torch.equal(state["c"], w[1])


def test_stale_weight_files_of_an_earlier_save_are_removed(tmp_path):
    (tmp_path / "README.md").write_text("mine")
    write_weights(small_state(), str(tmp_path), max_shard_size=1000)
    write_weights(small_state(1), str(tmp_path), safe_serialization=False)
    assert sorted(os.listdir(tmp_path)) == ["README.md", "pytorch_model.bin"]
    write_weights(small_state(2), str(tmp_path))
    # A single pytorch_model.bin carries no mark of who wrote it: it stays (as with transformers); loads prefer
    # the model.safetensors just written.
    assert sorted(os.listdir(tmp_path)) == ["README.md", "model.safetensors", "pytorch_model.bin"]
    assert_same_state(read_weights(find_weights(Source(tmp_path)))[0], small_state(2))


@pytest.mark.parametrize("sharded", [False, True])
def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch, sharded):
    write_weights(small_state(), str(tmp_path), max_shard_size=1000 if sharded else "5GB")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    before = listing(tmp_path)
    calls = []

    def failing_save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2 or not sharded:  # fail half-way through the file (the second one when sharded)
            with open(filename, "wb") as f:
                f.write(b"\x00" * 100)
            raise OSError("No space left on device")
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(weights, "save_file", failing_save_file)
    with pytest.raises(OSError, match="No space left"):
        write_weights(small_state(1), str(tmp_path), max_shard_size=1000 if sharded else "5GB")
    assert listing(tmp_path) == before  # same names (no temporary files left), same bytes
    assert all(os.path.dirname(c) == str(tmp_path) for c in calls)  # temporaries beside the target


def test_failed_bin_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    write_weights(small_state(), str(tmp_path), safe_serialization=False)
    before = listing(tmp_path)

    def failing_torch_save(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", failing_torch_save)
    with pytest.raises(KeyboardInterrupt):
        write_weights(small_state(1), str(tmp_path), safe_serialization=False)
    assert listing(tmp_path) == before


def test_written_files_have_normal_permissions(tmp_path):
    write_weights(small_state(), str(tmp_path))
    mode = os.stat(tmp_path / "model.safetensors").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_copy_of_minilm_reads_identically(tmp_path, minilm_dir):
    shutil.copy(os.path.join(minilm_dir, "model.safetensors"), tmp_path / "model.safetensors")
    a = read_weights([os.path.join(minilm_dir, "model.safetensors")])[0]
    b = read_weights(find_weights(Source(tmp_path)))[0]
    assert_same_state(a, b)
    assert a["embeddings.position_ids"].dtype == torch.int64  # the old buffer is in the file; the loader drops it
