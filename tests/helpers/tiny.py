"""A tiny random-config BERT, its tokenizer, learnable SST-2-layout data and a profile, for
tests of everything that trains (CPU, seconds, no download)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

WORDS = "good great fine nice bad awful poor sad the a movie film plot actor very quite".split()
NUM_LAYERS = 3


def _write_sst2(folder: Path, n: int, seed: int) -> None:
    """SST-2-layout TSV whose label is carried by one keyword (learnable by a tiny model)."""
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.randint(0, 1)
        words = [rng.choice(WORDS[8:]) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randint(0, len(words)), rng.choice(WORDS[:4] if label else WORDS[4:8]))
        lines.append(" ".join(words) + "\t" + str(label))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{'train' if n > 150 else 'dev'}.tsv").write_text("\n".join(lines) + "\n")


def make_tiny(root: Path) -> dict[str, str]:
    """Write a tiny random BERT folder (no dropout), its tokenizer, SST-2-style data and a
    profile under ``root``; return the ``model``, ``data_dir`` and ``profile`` settings."""
    import torch
    import transformers

    from loladeft.profiling.profile import Profile

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    _write_sst2(root / "glue" / "SST-2", 400, 1)
    _write_sst2(root / "glue" / "SST-2", 100, 2)
    depths = profile_depths(NUM_LAYERS)
    Profile(
        model="tiny",
        dtype="fp32",
        batch=8,
        seq=16,
        lora_r=8,
        lora_targets=("query", "value"),
        block_bits=32 * 1024,
        depths=depths,
        source="analytic",
        note="test profile",
    ).to_json(root / "profile.json")
    return {
        "model": str(root / "model"),
        "data_dir": str(root / "glue"),
        "profile": str(root / "profile.json"),
    }


def tiny_config(tiny: dict[str, str], **kw: Any) -> Any:
    """Settings of a short run on the tiny model: fp32, no warm-up, no dropout, K = 5.

    Keywords are setting names of any table (``rounds``, ``num_devices``, ``lora_dropout``
    for ``lora.dropout``, ``round_timeout``...)."""
    from loladeft.config import Config, load_config

    base: dict[str, Any] = dict(
        task="sst2",
        scheme="jbba",
        rounds=4,
        num_devices=5,
        batch=8,
        lr=2e-2,
        warmup_ratio=0.0,
        lora_dropout=0.0,
        eval_every=2,
        precision="fp32",
        **tiny,
    )
    base.update(kw)
    tables = ("train", "scenario", "runtime")
    keys = {}
    for name, value in base.items():
        if name.startswith("lora_"):
            keys[f"lora.{name[5:]}"] = value
            continue
        table = next(t for t in tables if name in Config.model_fields[t].annotation.model_fields)
        keys[f"{table}.{name}"] = value
    return load_config(None, keys)


def profile_depths(num_layers: int) -> tuple[Any, ...]:
    """The tiny profile's per-depth costs for ``num_layers`` layers (FLOPs and activations
    growing with depth, as in a real profile)."""
    from loladeft.profiling.profile import DepthCost

    return tuple(
        DepthCost(
            depth=l,
            flops=1e9 * (1 + 0.3 * l),
            activation_bytes=1e6 * l,
            weight_bytes=1e6,
            block_param_bytes=1e4,
        )
        for l in range(1, num_layers + 1)
    )
