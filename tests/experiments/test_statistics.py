"""Robust statistics of the latency sweeps: quartiles, Hill tail index, heavy-tail flag."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loladeft.config import load_config
from loladeft.experiments.runner import simulate_point
from loladeft.experiments.simulate import load_block_costs
from loladeft.experiments.statistics import heavy_tail, robust_stats, tail_index


@pytest.mark.parametrize("alpha", [0.8, 1.0, 3.0])
def test_hill_recovers_a_known_pareto_index(alpha):
    # an exact Pareto(alpha) sample: Hill's estimator is unbiased with sd alpha / sqrt(k)
    x = np.random.default_rng(1).pareto(alpha, 200_000) + 1.0
    assert tail_index(x) == pytest.approx(alpha, rel=0.05)


def test_flag_separates_pareto_1_from_light_tails():
    rng = np.random.default_rng(2)
    assert heavy_tail(rng.pareto(1.0, 1000) + 1.0)
    assert not heavy_tail(rng.exponential(1.0, 1000))
    assert not heavy_tail(rng.uniform(1.0, 2.0, 1000))
    # too few rounds: nothing is said
    assert math.isnan(tail_index(rng.pareto(1.0, 20) + 1.0))
    assert not heavy_tail(rng.pareto(1.0, 20) + 1.0)


def test_inverse_rayleigh_rate_is_heavy_and_its_minimum_of_many_is_not():
    # the paper's Rayleigh argument: 1 / log2(1 + rho |h|^2) has tail index 1 ...
    rng = np.random.default_rng(3)
    h = rng.exponential(1.0, (1000, 8))
    rate = np.log2(1 + 10.0 * h)
    assert heavy_tail(1 / rate[:, 0])
    # ... the best of 8 channels (min over 1/rate) has index 8: light
    assert not heavy_tail(1 / rate.max(axis=1))


def test_quartiles_against_numpy_and_nan_ignored():
    x = np.array([5.0, 1.0, np.nan, 3.0, 2.0, 4.0])
    st = robust_stats(x)
    assert (st.q25_latency_s, st.median_latency_s, st.q75_latency_s) == (2.0, 3.0, 4.0)
    empty = robust_stats([np.nan, np.nan])
    assert math.isnan(empty.median_latency_s) and empty.heavy_tail is False


def test_comp_aware_flagged_and_jbba_not_at_the_literal_preset():
    cfg = load_config(None, {"preset": "paper-literal"})
    scenario = cfg.scenario.scenario(load_block_costs("roberta-base"))
    schemes = ("comp-aware", "random", "comm-aware", "ba", "jbba")
    point = simulate_point(scenario, schemes, 400, 11)
    flags = {s: heavy_tail(point.latency[i]) for i, s in enumerate(schemes)}
    assert flags == {
        "comp-aware": True,
        "random": True,
        "comm-aware": False,
        "ba": False,
        "jbba": False,
    }
