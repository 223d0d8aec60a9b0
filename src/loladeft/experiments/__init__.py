"""The paper's latency experiments (Sec. VI-C, Figs. 5, 6 and 8) as Monte-Carlo sweeps.

========================  ==================================================================
module                    what it holds
========================  ==================================================================
:mod:`.config`            defaults, TOML file and validation of ``loladeft simulate``
:mod:`.sweeps`            the three sweeps (``fig5``: SNR, ``fig6``: bandwidth, ``fig8``: K)
:mod:`.runner`            one point = ``R`` rounds solved by every scheme; the process pool
:mod:`.output`            CSV and ``manifest.json``
:mod:`.plotting`          figures (matplotlib, imported lazily)
:mod:`.simulate`          :func:`run_simulation`, end to end, and the summary table
========================  ==================================================================

Typical use::

    from loladeft.experiments import load_config, run_simulation
    report = run_simulation(load_config("configs/paper.toml"))
"""

from loladeft.experiments.config import SimulationConfig, load_config
from loladeft.experiments.simulate import print_summary, run_simulation
from loladeft.experiments.sweeps import EXPERIMENTS

__all__ = ["EXPERIMENTS", "SimulationConfig", "load_config", "print_summary", "run_simulation"]
