"""Every paper artifact: the latency sweeps (Figs. 5, 6, 8), Fig. 4 from a profile, and
Fig. 7 / Table I from training runs, behind ``loladeft simulate`` and ``loladeft reproduce``.

========================  ==================================================================
module                    what it holds
========================  ==================================================================
:mod:`.sweeps`            the three sweeps (``fig5``: SNR, ``fig6``: bandwidth, ``fig8``: K)
:mod:`.runner`            one point = ``R`` rounds solved by every scheme; the process pool
:mod:`.output`            the sweeps' CSV files
:mod:`.simulate`          :func:`run_simulation`, end to end, and the summary table
:mod:`.plotting`          every figure's matplotlib setup and saving; the sweep figures
:mod:`.fig4`              Fig. 4(a)/(b) from a profile
:mod:`.table1`            Table I and Fig. 7 from training runs
:mod:`.reproduce`         ``loladeft reproduce {fig4,...,table1,all}``
========================  ==================================================================

The settings come from :class:`loladeft.config.Config`; provenance (versions, git revision,
manifest) and atomic output folders from :mod:`loladeft.results`.

Typical use::

    from loladeft.config import load_config
    from loladeft.experiments import run_simulation
    report = run_simulation(load_config("configs/paper.toml"))
"""

from loladeft.experiments.simulate import print_summary, run_simulation
from loladeft.experiments.sweeps import EXPERIMENTS

__all__ = ["EXPERIMENTS", "print_summary", "run_simulation"]
