"""DEFT on real Flower runtimes, end to end on loopback (issue 6), with a tiny model.

1. simulation runtime (Ray): two rounds give the in-process engine's metrics and weights;
2. deployment runtime (SuperLink + SuperNodes): two rounds write ``loladeft train``'s files
   with the in-process metrics;
3. a SuperNode killed mid-run: its block is reassigned, the run finishes;
4. TLS + SuperNode authentication: the run works, an unregistered node is refused.
Every process started is stopped, also when a test fails (``LocalFederation`` exits).
"""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("flwr")
pytest.importorskip("ray")

from loladeft.training.config import TrainConfig  # noqa: E402
from loladeft.training.run import read_metrics, train  # noqa: E402
from tiny import make_tiny  # noqa: E402

pytestmark = pytest.mark.torch

K = 3  # = L of the tiny model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def _cfg(tiny: dict[str, str], **kw: object) -> TrainConfig:
    base = dict(
        task="sst2",
        scheme="jbba",
        rounds=2,
        num_devices=K,
        batch=8,
        lr=2e-2,
        warmup_ratio=0.0,
        lora_dropout=0.1,
        eval_every=1,
        precision="fp32",
        **tiny,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory) -> tuple[list[dict[str, str]], dict]:
    """The in-process run the Flower runs must reproduce."""
    out = tmp_path_factory.mktemp("inproc") / "run"
    trainer = train(_cfg(tiny), out)
    return read_metrics(out / "metrics.csv"), trainer.weights()


def _assert_same_rows(rows: list[dict[str, str]], ref: list[dict[str, str]]) -> None:
    assert [r["round"] for r in rows] == [r["round"] for r in ref]
    for r, q in zip(rows, ref, strict=True):
        assert r["scheme"] == q["scheme"] and r["feasible"] == q["feasible"]
        for col in ("sim_time_s", "round_latency_s", "train_loss", "metric"):
            if q[col] == "":
                assert r[col] == ""
            else:
                assert math.isclose(float(r[col]), float(q[col]), rel_tol=1e-5, abs_tol=1e-9)


def test_simulation_runtime_reproduces_the_in_process_engine(tiny, reference, tmp_path):
    from loladeft.runtime.simulation import simulate

    ref_rows, ref_weights = reference
    trainer = simulate(_cfg(tiny), tmp_path / "sim")
    _assert_same_rows(read_metrics(tmp_path / "sim" / "metrics.csv"), ref_rows)
    weights = trainer.weights()
    assert weights.keys() == ref_weights.keys()
    for name, w in weights.items():
        torch.testing.assert_close(w, ref_weights[name], rtol=1e-5, atol=1e-7)
    manifest = json.loads((tmp_path / "sim" / "manifest.json").read_text())
    assert manifest["finished"] and manifest["runtime"]["engine"] == "flower-simulation"
    assert manifest["runtime"]["messages"] == 2 * (K + K)  # per round: K queries, L = K trains
