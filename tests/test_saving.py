"""A checkpoint is saved whole or not at all (issue 9, item 1).

A save killed between two renames, or whose config.json could not be written, must load as a clear
"interrupted" error, never as a silent mix of old and new files; its leftover temporary files go with the next
save; a save deletes only weight files a save wrote.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from pretrained import BertConfig, BertModel, CheckpointError
from pretrained import weights
from pretrained.weights import SAVE_JOURNAL

TINY = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
            max_position_embeddings=16)


def tiny_model(seed: int, **config) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(BertConfig(**{**TINY, **config})).eval()


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def kill_during_save(folder, renames_before_kill: int, safe: bool = True) -> None:
    """In a subprocess, save a new model (seed 1, other config) into `folder` and die (os._exit, no cleanup)
    after `renames_before_kill` renames."""
    code = textwrap.dedent(f"""
        import os, torch
        from pretrained import BertConfig, BertModel
        from pretrained import weights
        torch.manual_seed(1)
        model = BertModel(BertConfig(**{TINY!r}, layer_norm_eps=1e-6))
        real, calls = os.replace, []
        def replace(src, dst):
            if dst.endswith(".json") and os.path.basename(dst).startswith(".pretrained"):
                return real(src, dst)  # the journal
            if len(calls) == {renames_before_kill}:
                os._exit(9)
            calls.append(dst)
            real(src, dst)
        weights.os.replace = replace
        model.save_pretrained({str(folder)!r}, max_shard_size=3000, safe_serialization={safe})
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 9, out.stderr


@pytest.mark.parametrize("renames, safe", [(1, True), (5, True), (2, False)])
def test_sharded_save_killed_between_renames_is_reported_not_mixed(tmp_path, renames, safe):
    old = tiny_model(0)
    old.save_pretrained(tmp_path, max_shard_size=3000, safe_serialization=safe)
    assert len([n for n in os.listdir(tmp_path) if "-of-" in n]) > 5
    kill_during_save(tmp_path, renames, safe)
    with pytest.raises(CheckpointError, match="interrupted") as info:
        BertModel.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # what the killed save left

    new = tiny_model(2)
    new.save_pretrained(tmp_path, max_shard_size=3000, safe_serialization=safe)  # the next save cleans up
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp") or n == SAVE_JOURNAL]
    assert same_weights(BertModel.from_pretrained(tmp_path), new)


def test_config_write_failing_after_the_weights_is_reported(tmp_path, monkeypatch):
    old = tiny_model(0)
    old.save_pretrained(tmp_path)
    real = os.replace

    def replace(src, dst):
        if dst.endswith("config.json"):
            raise OSError("No space left on device")
        real(src, dst)

    monkeypatch.setattr(weights.os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        tiny_model(1, layer_norm_eps=1e-6).save_pretrained(tmp_path)
    monkeypatch.setattr(weights.os, "replace", real)
    with pytest.raises(CheckpointError, match="interrupted"):
        BertModel.from_pretrained(tmp_path)


def test_failure_before_any_rename_leaves_the_old_checkpoint_loading(tmp_path, monkeypatch):
    old = tiny_model(0)
    old.save_pretrained(tmp_path, max_shard_size=3000)
    before = sorted(os.listdir(tmp_path))
    monkeypatch.setattr(weights, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        tiny_model(1).save_pretrained(tmp_path, max_shard_size=3000)
    assert sorted(os.listdir(tmp_path)) == before
    assert same_weights(BertModel.from_pretrained(tmp_path), old)


def test_leftover_temp_files_are_removed_by_the_next_save_and_others_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # the id of a process that has ended
    leftovers = [".model.safetensors.ab12cd34.tmp", ".config.json.x_y9z8w7.tmp",
                 f".model-00002-of-00005.safetensors.{dead}.abcdefgh.tmp", f".pytorch_model.bin.{dead}.12345678.tmp"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"\0" * 1000)
    (tmp_path / ".notes.txt.abcdefgh.tmp").write_text("not ours")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a save running now in another process: its temporary file is left alone
        (tmp_path / f".model.safetensors.{live.pid}.zzzzzzzz.tmp").write_bytes(b"being written")
        tiny_model(0).save_pretrained(tmp_path)
    finally:
        live.kill()
        live.wait()
    assert sorted(os.listdir(tmp_path)) == [".model.safetensors.%d.zzzzzzzz.tmp" % live.pid,
                                            ".notes.txt.abcdefgh.tmp", "config.json", "model.safetensors"]


def test_weight_files_are_synced_before_their_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(weights, "fsync_file", lambda p: events.append(("fsync", os.path.basename(p))))
    monkeypatch.setattr(weights, "fsync_folder", lambda p: events.append(("fsync-folder", str(p))))
    real = os.replace
    monkeypatch.setattr(weights.os, "replace", lambda s, d: (events.append(("rename", os.path.basename(s))),
                                                             real(s, d))[1])
    tiny_model(0).save_pretrained(tmp_path, max_shard_size=3000)
    renamed = [name for kind, name in events if kind == "rename" and "safetensors." in name and "index" not in name]
    synced = [name for kind, name in events if kind == "fsync"]
    assert renamed and all(name in synced for name in renamed)
    first_rename = next(i for i, e in enumerate(events) if e[0] == "rename")
    assert all(events.index(("fsync", name)) < first_rename for name in renamed)
    assert ("fsync-folder", str(tmp_path)) in events[first_rename:]


def test_save_deletes_only_weight_files_a_save_wrote(tmp_path):
    # The user's own files with weight-like names, not part of any index: kept.
    (tmp_path / "model-00001-of-00009.safetensors").write_bytes(b"user file")
    (tmp_path / "pytorch_model.bin").write_bytes(b"user's old weights")
    model = tiny_model(0)
    model.save_pretrained(tmp_path, max_shard_size=3000)
    model.save_pretrained(tmp_path)  # single file: our shards and index go
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model-00001-of-00009.safetensors", "model.safetensors",
                                            "pytorch_model.bin"]
    assert (tmp_path / "pytorch_model.bin").read_bytes() == b"user's old weights"
    assert same_weights(BertModel.from_pretrained(tmp_path), model)
    model.save_pretrained(tmp_path, safe_serialization=False)  # our model.safetensors would shadow it: removed
    assert "model.safetensors" not in os.listdir(tmp_path)
    assert same_weights(BertModel.from_pretrained(tmp_path), model)


def test_save_refuses_to_write_what_a_users_file_would_shadow(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))  # not written by a save of ours
    with pytest.raises(FileExistsError, match="model.safetensors"):
        tiny_model(0).save_pretrained(tmp_path, safe_serialization=False)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_transformers_sharded_save_is_replaced_and_our_shards_load_in_transformers(tmp_path):
    import transformers

    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(**TINY)).eval()
    hf.save_pretrained(tmp_path, max_shard_size="3KB")
    hf_shards = {n for n in os.listdir(tmp_path) if "-of-" in n}
    ours = BertModel.from_pretrained(tmp_path)
    ours.save_pretrained(tmp_path, max_shard_size=5000)
    names = set(os.listdir(tmp_path))
    assert hf_shards and not (hf_shards & names)  # the shards of the index this save replaces go
    index = __import__("json").loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {n for n in names if "-of-" in n}
    back = transformers.BertModel.from_pretrained(tmp_path).eval()
    assert all(torch.equal(a, b) for a, b in zip(hf.state_dict().values(), back.state_dict().values()))


def test_shards_of_different_saves_are_reported(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    tiny_model(0).save_pretrained(a, max_shard_size=3000)
    tiny_model(1).save_pretrained(b, max_shard_size=3000)
    second = sorted(n for n in os.listdir(a) if "-of-" in n)[1]
    os.replace(b / second, a / second)
    with pytest.raises(CheckpointError, match="different saves"):
        BertModel.from_pretrained(a)
