"""``loladeft solve`` on hostile files (issue 14 items 3, 4 and 10, and its fuzz test).

Every malformed file gets exactly one stderr line naming it and the problem; every other
file of the batch is still solved; the worst exit code wins (2 bad input, 3 infeasible,
0 ok); never a traceback.
"""

from __future__ import annotations

import json
import os
import string
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli_solve import GOOD, INFEASIBLE, _strict_json, assert_one_error_line, run_cli

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "paper-example.json")


def _write_bytes(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


HOSTILE = {
    "non-utf8": (b'{"J": "\xff\xfe"}', "UTF-8"),
    "integer-too-large": (
        json.dumps(GOOD).replace("1000000.0", "1" + "0" * 400).encode(),
        "block_bits",
    ),
    "integer-too-many-digits": (
        json.dumps(GOOD).replace("1000000.0", "1" + "0" * 5000).encode(),
        "JSON",
    ),
    "deep-nesting": (b"[" * 100_000 + b"]" * 100_000, "nest"),
    "deep-nesting-in-a-field": (
        json.dumps({**GOOD, "J": "X"}).replace('"X"', "[" * 3000 + "]" * 3000).encode(),
        "J",
    ),
    "numeric-strings": (
        json.dumps({**GOOD, "block_memory": ["1", "2", "3"]}).encode(),
        "block_memory",
    ),
    "nul-bytes": (b"\x00\x00\x00", "JSON"),
    "utf8-bom": (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), None),  # solvable
}


@pytest.mark.parametrize(("content", "needle"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_file_one_line_and_the_rest_solved_issue14_item4(tmp_path, content, needle):
    bad = _write_bytes(tmp_path, "bad.json", content)
    good = _write_bytes(tmp_path, "good.json", json.dumps(GOOD).encode())
    proc = run_cli(bad, good, "--json", in_process=True)
    assert "Traceback" not in proc.stderr + proc.stdout
    records = [_strict_json(line) for line in proc.stdout.splitlines()]
    assert records[-1]["file"] == good and records[-1]["feasible"] is True
    if needle is None:  # a BOM is tolerated: both files solved
        assert proc.returncode == 0 and proc.stderr == ""
        return
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc, "bad.json", needle)


def test_directory_and_missing_file_one_line_each_issue14_item4(tmp_path):
    good = _write_bytes(tmp_path, "good.json", json.dumps(GOOD).encode())
    (tmp_path / "adir").mkdir()
    proc = run_cli(str(tmp_path / "adir"), str(tmp_path / "nope.json"), good, "--json")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and "adir" in lines[0] and "nope.json" in lines[1]
    assert "Traceback" not in proc.stderr
    assert _strict_json(proc.stdout.splitlines()[-1])["feasible"] is True


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_one_line_issue14_item4(tmp_path):
    bad = _write_bytes(tmp_path, "locked.json", json.dumps(GOOD).encode())
    os.chmod(bad, 0)
    good = _write_bytes(tmp_path, "good.json", json.dumps(GOOD).encode())
    proc = run_cli(bad, good, "--json", in_process=True)
    assert proc.returncode == 2
    assert_one_error_line(proc, "locked.json")


def test_huge_bandwidth_json_is_finite_issue14_item3(tmp_path):
    data = json.loads(open(EXAMPLE).read())
    data["bandwidth"] = 1e30
    path = _write_bytes(tmp_path, "huge.json", json.dumps(data).encode())
    for scheme in ("jbba", "jbba-dual"):
        proc = run_cli(path, "--json", "--scheme", scheme, in_process=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        record = _strict_json(proc.stdout)
        assert record["feasible"] is True and record["latency"] >= 29.0


@pytest.mark.parametrize("seed", ["-1", "-5"])
def test_negative_seed_one_line_issue14_item10(tmp_path, seed):
    path = _write_bytes(tmp_path, "good.json", json.dumps(GOOD).encode())
    proc = run_cli(path, "--scheme", "random", "--seed", seed, in_process=True)
    assert proc.returncode == 2
    assert_one_error_line(proc, "seed")
    assert proc.stdout == ""


def test_upload_overflow_reason_through_the_cli_issue14_item10(tmp_path):
    data = {**GOOD, "spectral_efficiency": [1e-300] * 4, "block_bits": 1e20}
    path = _write_bytes(tmp_path, "slow.json", json.dumps(data).encode())
    proc = run_cli(path, "--json")  # a real process: a stray numpy warning would show
    assert proc.returncode == 3
    assert proc.stderr == ""
    record = _strict_json(proc.stdout)
    assert "upload" in record["reason"] and "memory" not in record["reason"]


# -- fuzz: instance JSON fed to the CLI ---------------------------------------------------------

FIELDS = ("J", "block_memory", "device_memory", "spectral_efficiency", "block_bits", "bandwidth")

_scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-320, max_value=1e308),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0, 1, -1, 1e-310, 1e308, 10**309]),
    st.booleans(),
    st.none(),
    st.text(alphabet=string.digits + ".e-", max_size=6),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=20,
)


@st.composite
def instances(draw) -> str:
    """Mostly well-formed instances with extreme numbers, some with a field replaced."""
    K = draw(st.integers(1, 5))
    L = draw(st.integers(1, K))
    # Every magnitude a double holds: uploads vanishing next to compute, overflowing uploads,
    # subnormals (refused for r, S and B).
    num = st.one_of(
        st.floats(min_value=0, max_value=1e308),
        st.sampled_from([0.0, 1e-310, 1e-9, 1.0, 1e30, 1e300]),
    )
    pos = st.one_of(
        st.floats(min_value=1e-320, max_value=1e308),
        st.sampled_from([1e-300, 1e-12, 1.0, 1e30, 1e300]),
    )
    data = {
        "J": draw(st.lists(st.lists(num, min_size=L, max_size=L), min_size=K, max_size=K)),
        "block_memory": draw(st.lists(num, min_size=L, max_size=L)),
        "device_memory": draw(st.lists(num, min_size=K, max_size=K)),
        "spectral_efficiency": draw(st.lists(pos, min_size=K, max_size=K)),
        "block_bits": draw(pos),
        "bandwidth": draw(pos),
    }
    if draw(st.booleans()):  # break one field
        data[draw(st.sampled_from(FIELDS))] = draw(_values)
    text = json.dumps(data)
    if draw(st.integers(0, 9)) == 0:  # or break the text
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", "\x00", "[" * 2000, "\udcff", "}"]))
    return text


@settings(  # fixed examples in CI; LOLADEFT_FUZZ_EXAMPLES=N explores N fresh ones
    max_examples=int(os.environ.get("LOLADEFT_FUZZ_EXAMPLES", "150")),
    derandomize="LOLADEFT_FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=instances(), scheme=st.sampled_from(["jbba", "jbba-dual", "ba", "comp-aware"]))
def test_fuzz_instance_json_through_the_cli_issue14(tmp_path, text, scheme):
    bad = tmp_path / "fuzz.json"
    bad.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    good = _write_bytes(tmp_path, "good.json", json.dumps(GOOD).encode())
    wall = _write_bytes(tmp_path, "wall.json", json.dumps(INFEASIBLE).encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's warnings would reach stderr
        proc = run_cli(str(bad), good, wall, "--json", "--scheme", scheme, in_process=True)
    assert proc.returncode in (2, 3), proc.stderr  # the wall file alone gives 3
    assert "invalid allocation" not in proc.stderr  # no scheme broke C1-C3
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) <= 1
    assert all(str(bad) in line for line in lines)
    records = [_strict_json(line) for line in proc.stdout.splitlines()]
    assert len(records) == 3
    first = records[0]
    assert ("error" in first) == bool(lines)
    if first.get("feasible"):
        assert isinstance(first["latency"], float)
    assert records[1]["file"] == good and records[1]["feasible"] is True
    assert records[2]["file"] == wall and records[2]["feasible"] is False
