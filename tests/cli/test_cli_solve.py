"""``loladeft solve``: JSON Lines output, one-line errors, exit codes, no heavy imports.

Exit-code and stderr tests run the real entry point in a subprocess (so a traceback or a
stray line would show); the scheme sweep uses Typer's in-process ``CliRunner``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.reference import brute_force_p1, brute_force_p2
from loladeft.allocation.registry import SCHEMES, solve
from loladeft.cli.app import app

KEYS = {
    "scheme",
    "feasible",
    "latency",
    "assignment",
    "bandwidth",
    "device_latency",
    "solve_seconds",
    "iterations",
}
HEAVY = ("torch", "flwr", "matplotlib", "transformers", "peft")

GOOD = {
    "J": [[1.0, 2.0, 5.0], [1.0, 4.0, 6.0], [2.0, 3.0, 9.0], [0.5, 1.0, 2.0]],
    "block_memory": [1.0, 2.0, 3.0],
    "device_memory": [3.0, 3.0, 2.0, 1.0],
    "spectral_efficiency": [1.0, 2.0, 1.5, 1.0],
    "block_bits": 1e6,
    "bandwidth": 3e6,
    "device_names": ["a", "b", "c", "d"],  # extra keys are ignored
}
# blocks of depth >= 2 need memory >= 3; only one device has it
INFEASIBLE = {**GOOD, "block_memory": [1.0, 3.0, 3.0], "device_memory": [3.0, 1.0, 1.0, 2.0]}


def _strict_json(line: str) -> dict:
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name} in {line!r}")

    record = json.loads(line, parse_constant=no_constants)
    assert isinstance(record, dict)
    return record


def run_cli(*args: str, in_process: bool = False) -> subprocess.CompletedProcess:
    """Run ``loladeft solve ARGS``: the real entry point in a subprocess, or (faster, for
    the many bad-input cases) Typer's ``CliRunner``, failing on any uncaught exception."""
    if in_process:
        result = CliRunner().invoke(app, ["solve", *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
    return subprocess.run(
        [sys.executable, "-c", "from loladeft.cli.app import main; main()", "solve", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def write(tmp_path):
    def _write(name: str, content) -> str:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)

    return _write


# -- success ------------------------------------------------------------------------------


def test_json_line_for_a_good_file(write):
    proc = run_cli(write("good.json", GOOD), "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    record = _strict_json(lines[0])
    assert KEYS <= set(record)
    assert record["scheme"] == "jbba"  # the default
    assert record["feasible"] is True
    assert math.isclose(record["latency"], brute_force_p2(GOOD), rel_tol=1e-9)
    assert len(record["assignment"]) == 3 and all(isinstance(k, int) for k in record["assignment"])
    assert len(record["bandwidth"]) == 4 and len(record["device_latency"]) == 4
    assert sum(record["bandwidth"]) <= GOOD["bandwidth"] * (1 + 1e-9)
    assert record["latency"] == max(record["device_latency"])
    assert record["solve_seconds"] >= 0
    assert record["iterations"] is None or isinstance(record["iterations"], int)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_every_scheme_through_the_cli(tmp_path, scheme):
    path = tmp_path / "good.json"
    path.write_text(json.dumps(GOOD))
    result = CliRunner().invoke(app, ["solve", str(path), "--scheme", scheme, "--json"])
    assert result.exit_code == 0, result.output
    record = _strict_json(result.stdout.strip())
    assert record["scheme"] == scheme and record["feasible"] is True
    expected = solve(GOOD, scheme, seed=0)
    assert record["assignment"] == expected.assignment.tolist()
    assert record["latency"] == pytest.approx(expected.latency, rel=1e-12)
    if SCHEMES[scheme].exact:
        optimum = brute_force_p1(GOOD) if SCHEMES[scheme].problem == "P1" else brute_force_p2(GOOD)
        assert record["latency"] == pytest.approx(optimum, rel=1e-9)


def test_seed_makes_random_reproducible(tmp_path):
    path = tmp_path / "good.json"
    path.write_text(json.dumps(GOOD))
    runs = [
        CliRunner().invoke(app, ["solve", str(path), "-s", "random", "--seed", "5", "--json"])
        for _ in range(2)
    ]
    assert runs[0].exit_code == runs[1].exit_code == 0
    first, second = (_strict_json(r.stdout.strip()) for r in runs)
    assert first["assignment"] == second["assignment"]


def test_table_output(write):
    proc = run_cli(write("good.json", GOOD), "--scheme", "ba")
    assert proc.returncode == 0, proc.stderr
    assert "latency" in proc.stdout and "6" in proc.stdout
    assert proc.stderr == ""


# -- bad input: exit 2, one line on stderr --------------------------------------------------

MALFORMED = {
    "missing-key": ({k: v for k, v in GOOD.items() if k != "bandwidth"}, "bandwidth"),
    "ragged": ({**GOOD, "J": [[1.0, 2.0, 5.0], [1.0], [2.0, 3.0, 9.0], [0.5, 1.0, 2.0]]}, "J"),
    "nan": (
        json.dumps({**GOOD, "spectral_efficiency": [1.0, float("nan"), 1.0, 1.0]}),
        "spectral_efficiency",
    ),
    "infinity": (json.dumps({**GOOD, "bandwidth": float("inf")}), "bandwidth"),
    "negative-memory": ({**GOOD, "device_memory": [3.0, -3.0, 2.0, 1.0]}, "device_memory"),
    "zero-efficiency": (
        {**GOOD, "spectral_efficiency": [1.0, 0.0, 1.0, 1.0]},
        "spectral_efficiency",
    ),
    "wrong-length": ({**GOOD, "block_memory": [1.0, 2.0]}, "block_memory"),
    "L>K": (
        {
            **GOOD,
            "J": [[1.0, 2.0, 3.0]] * 2,
            "device_memory": [3.0, 3.0],
            "spectral_efficiency": [1.0, 1.0],
        },
        "J",
    ),
    "string": ({**GOOD, "block_bits": "1e6"}, "block_bits"),
    "boolean": ({**GOOD, "bandwidth": True}, "bandwidth"),
    "empty": ({**GOOD, "J": []}, "J"),
    "not-an-object": ([1, 2, 3], "instance"),
}


@pytest.mark.parametrize(("content", "field"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_file_exits_2_with_one_line(write, content, field):
    in_process = field != "J"  # one real subprocess per field is enough
    proc = run_cli(write("bad.json", content), "--json", in_process=in_process)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert_one_error_line(proc, field, "bad.json")


@pytest.mark.parametrize("content", ["{not json", "", "[1, 2,", "NaN garbage"])
def test_not_json_exits_2(write, content):
    proc = run_cli(write("bad.json", content), in_process=content != "")
    assert proc.returncode == 2
    assert_one_error_line(proc, "JSON")


def test_missing_file_exits_2(tmp_path):
    proc = run_cli(str(tmp_path / "nope.json"), "--json")
    assert proc.returncode == 2
    assert_one_error_line(proc, "nope.json")


def test_unknown_scheme_exits_2(write):
    proc = run_cli(write("good.json", GOOD), "--scheme", "fastest")
    assert proc.returncode == 2
    assert_one_error_line(proc, "scheme", "fastest")
    assert proc.stdout == ""


# -- infeasible: exit 3 ---------------------------------------------------------------------


def test_infeasible_exits_3_with_reason(write):
    proc = run_cli(write("wall.json", INFEASIBLE), "--json")
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stdout.splitlines()
    record = _strict_json(line)
    assert record["feasible"] is False
    assert "depth >= 2" in record["reason"]
    assert record["latency"] is None and record["assignment"] is None


def test_infeasible_table_output_exits_3(write):
    proc = run_cli(write("wall.json", INFEASIBLE), "--scheme", "ba")
    assert proc.returncode == 3
    assert "infeasible" in proc.stdout and "depth" in proc.stdout


# -- several files: the worst exit code, a line for every file -------------------------------


@pytest.mark.parametrize(
    ("kinds", "code"),
    [
        (["good", "good"], 0),
        (["good", "wall"], 3),
        (["wall", "good"], 3),
        (["good", "bad", "wall"], 2),
        (["bad", "good", "wall"], 2),
        (["wall", "good", "bad"], 2),
    ],
)
def test_several_files_worst_exit_code(write, kinds, code):
    contents = {"good": GOOD, "wall": INFEASIBLE, "bad": {**GOOD, "J": "oops"}}
    paths = [write(f"{i}-{kind}.json", contents[kind]) for i, kind in enumerate(kinds)]
    proc = run_cli(*paths, "--json", "--scheme", "ba", in_process=code != 2)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    records = [_strict_json(line) for line in proc.stdout.splitlines()]
    solved = [r for r in records if "feasible" in r]
    expected = [kind == "good" for kind in kinds if kind != "bad"]
    assert [r["feasible"] for r in solved] == expected  # every solvable file, in order
    solvable = [p for p, k in zip(paths, kinds, strict=True) if k != "bad"]
    for r, path in zip(solved, solvable, strict=True):
        if "file" in r:
            assert r["file"] == path
    n_bad = kinds.count("bad")
    assert len(proc.stderr.splitlines()) == n_bad
    if n_bad:
        assert_one_error_line(proc, "J")


# -- start-up: no heavy imports ----------------------------------------------------------------

_PROBE = """
import json, sys
{body}
heavy = [m for m in {heavy!r} if m in sys.modules]
sys.stderr.write(json.dumps(heavy))
"""


def _heavy_modules(body: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(body=body, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stderr.splitlines()[-1])


def test_importing_the_cli_does_not_import_torch():
    assert _heavy_modules("import loladeft.cli.app") == []


def test_solving_with_every_scheme_does_not_import_torch():
    body = f"import loladeft\nfor s in loladeft.SCHEMES: loladeft.solve({GOOD!r}, s, seed=0)"
    assert _heavy_modules(body) == []


def test_loladeft_solve_does_not_import_torch(write):
    path = write("good.json", GOOD)
    body = (
        f"sys.argv = ['loladeft', 'solve', {path!r}, '--json']\n"
        "from loladeft.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code"
    )
    assert _heavy_modules(body) == []


def test_console_script(write):
    """The installed ``loladeft`` entry point (pyproject ``[project.scripts]``)."""
    script = Path(sys.executable).with_name("loladeft")
    if not script.exists():
        pytest.skip("package not installed with its console script")
    proc = subprocess.run(
        [str(script), "solve", write("good.json", GOOD), "--json", "--scheme", "ba"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _strict_json(proc.stdout)["latency"] == 6.0
