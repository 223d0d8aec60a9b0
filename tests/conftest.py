"""Fixtures shared by the whole suite.

* Seeded instances (:mod:`helpers.instances`): a test asks for ``any_case``,
  ``monotone_case``, ``feasible_case``... and is parametrised over the matching cases.
* ``tiny``: the tiny model, its data and profile (:mod:`helpers.tiny`), written once per
  session.

Shared helpers live in the package ``tests/helpers`` (on ``sys.path`` through pytest's
``pythonpath``), never in this file: tests import them as ``from helpers.tiny import ...``.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.instances import CASES


def _distinct(values) -> bool:
    return len(set(np.round(values, 12).tolist())) == len(values)


_SELECTIONS = {
    "any_case": lambda c: True,
    "monotone_case": lambda c: c.instance.is_monotone,
    "nonmonotone_case": lambda c: not c.instance.is_monotone,
    "feasible_case": lambda c: c.p1 is not None,
    "monotone_feasible_case": lambda c: c.instance.is_monotone and c.p1 is not None,
    "infeasible_case": lambda c: c.p1 is None,
    "monotone_infeasible_case": lambda c: c.instance.is_monotone and c.p1 is None,
    # devices strictly ranked by computation (row sums of J) / by channel (r)
    "compute_ranked_case": lambda c: _distinct(np.sum(c.data["J"], axis=1)),
    "channel_ranked_case": lambda c: _distinct(c.data["spectral_efficiency"]),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, keep in _SELECTIONS.items():
        if name in metafunc.fixturenames:
            cases = [c for c in CASES if keep(c)]
            metafunc.parametrize(name, cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny model, its data and profile (:mod:`helpers.tiny`), written once per session."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from helpers.tiny import make_tiny

    torch.set_num_threads(1)
    return make_tiny(tmp_path_factory.mktemp("tiny"))
