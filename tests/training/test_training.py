"""Training engine (issue 5) on a tiny random-config BERT: CPU, seconds, no download.

1. one DEFT round with a shared minibatch and M = 1 aggregates the centralized gradient;
2. a device's step changes nothing, returns only its block's (and the head's) gradient, and
   its backward pass never reaches below its block;
3. the loss falls over a few rounds; the metrics match scikit-learn / scipy;
4. a killed run resumed with --resume continues bit-identically;
5. bad input -> one line, exit code 2, nothing already written lost.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("sklearn")

from helpers.tiny import NUM_LAYERS, tiny_config  # noqa: E402
from loladeft.training.engine import Trainer, device_gradient, full_gradient  # noqa: E402
from loladeft.training.metrics import task_metrics  # noqa: E402
from loladeft.training.run import read_metrics, train  # noqa: E402

pytestmark = pytest.mark.torch


_cfg = tiny_config


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


# ----------------------------------------------------------------------- 1. aggregation
def test_deft_round_with_shared_minibatch_equals_centralized_gradient(tiny, monkeypatch):
    import loladeft.training.engine as engine

    trainer = Trainer(_cfg(tiny)).setup()
    with torch.no_grad():  # non-zero LoRA B, so every LoRA matrix has a non-zero gradient
        gen = torch.Generator().manual_seed(3)
        for p in trainer.params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    batch = trainer._batch(0)
    monkeypatch.setattr(trainer, "_batch", lambda _k: batch)  # every device: same minibatch
    captured: dict[str, list[torch.Tensor]] = {}

    def capture(optimizer, scheduler, params, grads):
        captured["grads"] = [g.clone() for g in grads]

    monkeypatch.setattr(engine, "apply_update", capture)
    trainer.step()  # one DEFT round, M = 1
    reference, _ = full_gradient(trainer.model, trainer.params, batch)
    assert len(captured["grads"]) == len(reference)
    for got, want in zip(captured["grads"], reference, strict=True):
        assert float(want.norm()) > 0
        assert _rel(got, want) <= 1e-6


# ----------------------------------------------------------------------- 2. truncation
@pytest.mark.filterwarnings("ignore:Full backward hook:UserWarning")
@pytest.mark.parametrize("depth", range(1, NUM_LAYERS + 1))
def test_device_step_stays_in_its_block(tiny, depth):
    from loladeft.models import find_blocks

    trainer = Trainer(_cfg(tiny)).setup()
    layers = find_blocks(trainer.model)  # input side first
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    forward_grad: dict[int, bool] = {}
    backward_hit: set[int] = set()
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(
            layer.register_forward_hook(
                lambda _m, _inp, out, i=i: (
                    forward_grad.__setitem__(i, out[0].requires_grad)
                    if isinstance(out, tuple)
                    else forward_grad.__setitem__(i, out.requires_grad)
                )
            )
        )
        hooks.append(
            layer.register_full_backward_hook(lambda _m, _gi, _go, i=i: backward_hit.add(i))
        )
    block = trainer.blocks[depth - 1]
    g_block, g_head, loss = device_gradient(
        trainer.model, block, trainer.head, [trainer._batch(0), trainer._batch(1)]
    )
    for h in hooks:
        h.remove()
    L = len(layers)
    own = L - depth  # input-side index of the block at this depth
    assert backward_hit == set(range(own, L))  # the block and those above it, none below
    assert all(not forward_grad[i] for i in range(own))
    assert [g.shape for g in g_block] == [p.shape for p in block]
    assert [g.shape for g in g_head] == [p.shape for p in trainer.head]
    assert math.isfinite(loss)
    for n, p in trainer.model.named_parameters():  # the device changed nothing
        assert torch.equal(p, before[n]), n
        assert p.grad is None and not p.requires_grad, n
    # the block's LoRA parameters are exactly the 'lora_' parameters of that layer
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all(f"layer.{own}." in names[id(p)] and "lora_" in names[id(p)] for p in block)


def test_server_update_changes_only_trainable_parameters(tiny):
    trainer = Trainer(_cfg(tiny)).setup()
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.step()
    trained = {id(p) for p in trainer.params}
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed  # something trained
    assert all(id(p) in trained for n, p in trainer.model.named_parameters() if n in changed)


# ----------------------------------------------------------------------- 3. learning, metrics
def test_loss_falls_and_accuracy_rises(tiny, tmp_path):
    trainer = train(_cfg(tiny, rounds=30, eval_every=30, batch=16, lr=5e-2), tmp_path / "run")
    losses = [h.train_loss for h in trainer.history[1:]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05
    first, last = trainer.history[0].metrics["accuracy"], trainer.history[-1].metrics["accuracy"]
    assert last > max(first, 0.7)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["round"] for r in rows] == [str(i) for i in range(31)]
    times = [float(r["sim_time_s"]) for r in rows]
    assert times[0] == 0 and bool(np.all(np.diff(times) > 0))
    lat = [float(r["round_latency_s"]) for r in rows[1:]]
    assert np.allclose(np.cumsum(lat), times[1:])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["mode"] == "separate" and manifest["finished"]
    assert (tmp_path / "run" / "metric_vs_time.png").stat().st_size > 0


def test_clock_is_the_schemes_round_latency(tiny):
    from loladeft.allocation.registry import solve

    trainer = Trainer(_cfg(tiny, scheme="ba")).setup()
    rec = trainer.step()
    inst = trainer.clock.instance(1)
    assert rec.latency["ba"] == solve(inst, "ba").latency
    # S is the paper's: one block's LoRA parameters, 32 bits each (scenario.upload = block)
    lora = sum(p.numel() for p in trainer.blocks[0])
    head = sum(p.numel() for p in trainer.head)
    assert inst.block_bits == 32 * lora
    both = Trainer(_cfg(tiny, scheme="ba").updated({"scenario.upload": "block+head"})).setup()
    assert both.clock.instance(1).block_bits == 32 * (lora + head)


def test_evaluate_matches_sklearn_on_the_models_predictions(tiny):
    from sklearn.metrics import accuracy_score

    from loladeft.training.data import collate

    trainer = Trainer(_cfg(tiny)).setup()
    trainer.model.eval()
    data = trainer.dev_data[0]
    batch = collate(data, np.arange(len(data)), trainer.pad_id)
    labels = batch.pop("labels").numpy()
    with torch.no_grad():
        preds = trainer.model(**batch).logits.argmax(-1).numpy()
    assert trainer.evaluate()["accuracy"] == pytest.approx(accuracy_score(labels, preds))


def test_metrics_match_independent_references():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef

    y = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1])
    p = np.array([1, 0, 0, 1, 1, 1, 0, 0, 1, 0])
    tp, tn, fp, fn = 4, 3, 1, 2
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    cola = task_metrics("cola", p, y)
    assert cola["matthews"] == pytest.approx(mcc) == pytest.approx(matthews_corrcoef(y, p))
    mrpc = task_metrics("mrpc", p, y)
    assert mrpc["accuracy"] == pytest.approx(0.7)
    assert mrpc["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn)) == pytest.approx(f1_score(y, p))
    assert list(task_metrics("rte", p, y)) == ["accuracy"]
    s_true = np.array([0.0, 1.5, 2.0, 3.7, 5.0])
    s_pred = np.array([0.3, 1.0, 2.6, 3.1, 4.0])
    stsb = task_metrics("stsb", s_pred, s_true)
    assert stsb["pearson"] == pytest.approx(np.corrcoef(s_pred, s_true)[0, 1])
    assert stsb["pearson"] == pytest.approx(pearsonr(s_pred, s_true)[0])
    assert stsb["spearman"] == pytest.approx(1.0) == pytest.approx(spearmanr(s_pred, s_true)[0])


# ----------------------------------------------------------------------- 4. resume
class _Kill(Exception):
    pass


def test_killed_run_resumes_bit_identically(tiny, tmp_path):
    cfg = _cfg(tiny, rounds=5, lora_dropout=0.1, checkpoint_every=1, eval_every=2)
    full = train(cfg, tmp_path / "full")

    def kill_after_3(trainer, rec):
        if rec.round == 3:
            raise _Kill

    with pytest.raises(_Kill):
        train(cfg, tmp_path / "killed", on_round=kill_after_3)
    resumed = train(cfg, tmp_path / "killed", resume=True)
    assert resumed.round == full.round == 5
    assert resumed.sim_time == full.sim_time
    a, b = full.state(), resumed.state()
    assert a["weights"].keys() == b["weights"].keys()
    for n in a["weights"]:
        assert torch.equal(a["weights"][n], b["weights"][n]), n
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
        assert torch.equal(sa["step"], sb["step"])
    assert a["scheduler"] == b["scheduler"] and a["streams"] == b["streams"]
    assert torch.equal(a["torch_rng"], b["torch_rng"])

    def rows(path):
        with open(path, newline="") as fh:
            return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(fh)]

    assert rows(tmp_path / "full" / "metrics.csv") == rows(tmp_path / "killed" / "metrics.csv")


def test_resume_refuses_other_settings(tiny, tmp_path):
    from loladeft.exceptions import InputError

    train(_cfg(tiny, rounds=1, eval_every=1), tmp_path / "run")
    with pytest.raises(InputError, match="lr"):
        train(_cfg(tiny, rounds=1, eval_every=1, lr=1e-3), tmp_path / "run", resume=True)


# ----------------------------------------------------------------------- 5. bad input
@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    """An output folder holding a finished 1-round run, and a snapshot of its files."""
    out = tmp_path_factory.mktemp("finished") / "out"
    train(_cfg(tiny, rounds=1, eval_every=1), out)
    snapshot = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    return out, snapshot


def _bad_layout(tmp_path: Path) -> str:
    folder = tmp_path / "bad" / "SST-2"
    folder.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("text\tlab\nfoo\t1\n")
    return str(tmp_path / "bad")


@pytest.mark.parametrize(
    "case",
    [
        "unknown task",
        "missing data dir",
        "wrong TSV layout",
        "more blocks than devices",
        "unknown scheme",
        "out holds a run",
    ],
)
def test_bad_input_is_one_line_exit_2_and_loses_nothing(tiny, finished, tmp_path, case):
    from typer.testing import CliRunner

    from loladeft.cli.app import app

    out, snapshot = finished
    args = {"task": "sst2", "data-dir": tiny["data_dir"], "scheme": "jbba", "devices": "5"}
    resume = ["--resume"]
    if case == "unknown task":
        args["task"] = "glue9"
    elif case == "missing data dir":
        args["data-dir"] = str(tmp_path / "nowhere")
    elif case == "wrong TSV layout":
        args["data-dir"] = _bad_layout(tmp_path)
    elif case == "more blocks than devices":
        args["devices"] = "2"
    elif case == "unknown scheme":
        args["scheme"] = "fastest"
    else:
        resume = []
    argv = [
        "train",
        *[x for k, v in args.items() for x in (f"--{k}", v)],
        "--model",
        tiny["model"],
        "--profile",
        tiny["profile"],
        "--out",
        str(out),
        "--rounds",
        "1",
        "--batch",
        "8",
        "--threads",
        "1",
        *resume,
    ]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("loladeft: "), result.stderr
    assert "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == snapshot


# ----------------------------------------------------------------------- modes, data, imports
def test_shared_trajectory_replays_each_schemes_clock(tiny, tmp_path):
    shared = train(_cfg(tiny, rounds=2, shared_schemes=("comm-aware", "ba")), tmp_path / "s")
    alone = train(_cfg(tiny, rounds=2, scheme="ba"), tmp_path / "ba")
    rows = read_metrics(tmp_path / "s" / "metrics.csv")
    assert {r["mode"] for r in rows} == {"shared-trajectory"}
    by = {s: [r for r in rows if r["scheme"] == s] for s in ("comm-aware", "ba")}
    assert [r["train_loss"] for r in by["ba"]] == [r["train_loss"] for r in by["comm-aware"]]
    # same per-round device states in every run: the ba clock is the separate ba run's clock
    assert shared.sim_time["ba"] == alone.sim_time["ba"]
    # and the trajectory is the separate run of the driving scheme (jbba), bit for bit
    driver = train(_cfg(tiny, rounds=2), tmp_path / "jbba")
    assert [h.train_loss for h in shared.history[1:]] == [h.train_loss for h in driver.history[1:]]
    assert torch.equal(shared.params[0], driver.params[0])
    assert shared.sim_time["comm-aware"] >= shared.sim_time["ba"]  # ba is optimal for P1
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["mode"] == "shared-trajectory" and manifest["driver"] == "jbba"


def test_centralized_baseline_uses_m_times_batch(tiny, tmp_path):
    trainer = train(_cfg(tiny, scheme="centralized", rounds=2, local_iterations=2), tmp_path / "c")
    assert trainer.streams[0].batch == 2 * 8 and trainer.clock is None
    rows = read_metrics(tmp_path / "c" / "metrics.csv")
    assert {r["mode"] for r in rows} == {"centralized"} and rows[-1]["sim_time_s"] == ""


GLUE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue"


@pytest.mark.skipif(not GLUE.is_dir(), reason="no GLUE TSV folder at ../shared/data/glue")
@pytest.mark.parametrize(
    ("task", "train_rows", "dev_rows"),
    [("cola", 8551, 1043), ("mrpc", 3668, 408), ("stsb", 5749, 1500), ("rte", 2490, 277)],
)
def test_glue_tsv_files_read_completely(task, train_rows, dev_rows):
    from loladeft.training.data import load_task

    data = load_task(task, GLUE)
    assert len(data.train) == train_rows and len(data.dev[0]) == dev_rows
    assert data.train.text_a[0] and (data.train.text_b is None) == (task == "cola")
    if task == "stsb":
        assert data.train.labels.dtype == np.float64 and data.train.labels.max() <= 5
    else:
        assert set(np.unique(data.train.labels)) == {0, 1}


def test_partition_is_iid_disjoint_and_complete():
    from loladeft.training.data import partition_iid

    shards = partition_iid(103, 10, seed=0)
    rows = np.concatenate(shards)
    assert sorted(rows.tolist()) == list(range(103))
    assert {len(s) for s in shards} == {10, 11}
    assert [s.tolist() for s in partition_iid(103, 10, seed=0)] == [s.tolist() for s in shards]


def test_cli_modules_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, loladeft.cli.app, loladeft.training.run, loladeft.experiments.table1; "
        "sys.exit(int(any(m in sys.modules for m in ('torch', 'transformers', 'peft'))))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_auto_precision_resolves_to_a_supported_one(tiny):
    from loladeft.training.engine import resolve_precision

    assert resolve_precision("auto") in ("fp32", "bf16")
    assert resolve_precision("fp32") == "fp32"
    trainer = Trainer(_cfg(tiny, precision="auto")).setup()
    assert trainer.precision == resolve_precision("auto")
    assert math.isfinite(trainer.step().train_loss)


# ----------------------------------------------------------------------- hardening (issue 14)
@pytest.mark.parametrize("label", ["nan", "inf", "-inf", "1e308", "NaN"])
def test_non_finite_or_huge_regression_label_is_refused(tmp_path, label):
    from loladeft.exceptions import InputError
    from loladeft.training.data import load_task

    folder = tmp_path / "glue" / "STS-B"
    folder.mkdir(parents=True)
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    row = "0\tmain\tf\t2012\t0\ts\ts\ta cat\ta dog\t{}"
    (folder / "train.tsv").write_text("\n".join([head, row.format("2.5"), row.format(label)]))
    (folder / "dev.tsv").write_text("\n".join([head, row.format("1.0")]))
    with pytest.raises(InputError) as info:
        load_task("stsb", tmp_path / "glue")
    message = str(info.value)
    assert "train.tsv line 3" in message and repr(label) in message and "\n" not in message


def test_non_finite_loss_stops_the_run_keeping_what_was_written(tiny, tmp_path):
    from loladeft.exceptions import RunError

    out = tmp_path / "run"

    def poison(trainer, rec):
        if rec.round == 2:
            with torch.no_grad():
                trainer.blocks[0][0].fill_(math.nan)

    cfg = _cfg(tiny, rounds=4, checkpoint_every=1)
    with pytest.raises(RunError) as info:
        train(cfg, out, on_round=poison)
    message = str(info.value)
    assert message.startswith("train: round 3: non-finite") and "\n" not in message, message
    assert [r["round"] for r in read_metrics(out / "metrics.csv")] == ["0", "1", "2"]
    assert json.loads((out / "checkpoint.json").read_text())["round"] == 2
    assert not json.loads((out / "manifest.json").read_text())["finished"]


def test_non_finite_gradient_stops_a_centralized_run(tiny, tmp_path):
    from loladeft.exceptions import RunError

    trainer = Trainer(_cfg(tiny, scheme="centralized")).setup()
    with torch.no_grad():
        trainer.head[0].fill_(math.inf)
    with pytest.raises(RunError, match=r"^train: round 1: non-finite"):
        trainer.step()
    assert trainer.round == 0 and trainer.history == []


def test_a_run_where_every_block_was_skipped_is_not_completed(tiny, tmp_path):
    from loladeft.exceptions import RunError
    from loladeft.training.engine import RoundWork

    class Silent(Trainer):
        """Every scheduled device fails (a runtime whose nodes never deliver)."""

        def run_devices(self, n, instance, allocation):
            return RoundWork([None] * self.num_blocks, float(allocation.latency))

    out = tmp_path / "run"
    with pytest.raises(RunError) as info:
        train(_cfg(tiny, rounds=3), out, make_trainer=lambda cfg, log: Silent(cfg, log))
    message = str(info.value)
    assert "none of the 3 rounds stepped" in message and "\n" not in message, message
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"] is False and manifest["rounds_skipped"] == 3
    rows = read_metrics(out / "metrics.csv")
    assert [r["feasible"] for r in rows[1:]] == ["0", "0", "0"]


def test_skipped_rounds_are_counted_and_reported(tiny, tmp_path):
    from loladeft.training.engine import RoundWork

    class Flaky(Trainer):
        def run_devices(self, n, instance, allocation):
            if n == 2:
                return RoundWork([None] * self.num_blocks, float(allocation.latency))
            return super().run_devices(n, instance, allocation)

    trainer = train(
        _cfg(tiny, rounds=3), tmp_path / "run", make_trainer=lambda cfg, log: Flaky(cfg, log)
    )
    assert trainer.skipped_rounds == [2]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["finished"] is True and manifest["rounds_skipped"] == 1
