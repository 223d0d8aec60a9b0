"""The fewer-devices experiment (issue 13, item 3) on a few rounds: which schemes apply at
which K, and multi-block devices never worse than the paper's jbba where both apply."""

from __future__ import annotations

import csv
import math

from loladeft.experiments.fewer_devices import (
    CSV_COLUMNS,
    SCHEMES,
    fewer_devices,
    llama_7b_profile,
    write_csv,
)
from loladeft.profiling.profile import load_profile


def test_shipped_llama_profile_has_32_blocks():
    profile = load_profile(llama_7b_profile())
    assert len(profile.depths) == 32 and profile.model == "llama-7b"


def test_fewer_devices_rows_and_applicability(tmp_path):
    rows = fewer_devices(devices=(4, 8, 32), rounds=3, seed=1)
    by = {(r.num_devices, r.scheme): r for r in rows}
    assert len(rows) == 3 * len(SCHEMES)
    for scheme in ("jbba", "comm-aware", "grouped-jbba"):
        assert by[(4, scheme)].rounds == 0 and math.isnan(by[(4, scheme)].mean_latency_s)
    assert by[(8, "grouped-jbba")].rounds == 3  # 8 groups of 4 layers on 8 devices
    assert by[(4, "multiblock-jbba")].rounds == 3  # 4 devices x 8 blocks
    assert by[(32, "jbba")].rounds == 3
    paper, multi = by[(32, "jbba")], by[(32, "multiblock-jbba")]
    if paper.infeasible_rounds == 0 and multi.infeasible_rounds == 0:
        # multi-block jbba starts from the single-block jbba optimum when K >= L
        assert multi.mean_latency_s <= paper.mean_latency_s * (1 + 1e-12)
    path = write_csv(rows, tmp_path / "fewer.csv")
    lines = list(csv.reader(path.open()))
    assert tuple(lines[0]) == CSV_COLUMNS and len(lines) == 1 + len(rows)
