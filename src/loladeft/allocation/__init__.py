"""Block and bandwidth allocation for LoLa-DEFT (paper Secs. IV–V). numpy and scipy only.

Which scheme to use
-------------------
========================  ======  =====  ==================================================
scheme                    problem exact  method
========================  ======  =====  ==================================================
``jbba`` (default)        P2      yes    parametric min-cost assignment (:mod:`.jbba`)
``jbba-dual``             P2      no     paper's Algorithm 3, dual ascent (:mod:`.dual`)
``ba``                    P1      yes    bottleneck assignment, depth counts (:mod:`.bottleneck`)
``crunch``                P1      yes*   paper's Algorithm 2 (:mod:`.crunch`); monotone only
``ba-hungarian``          P1      yes    paper's linear search + Hungarian (:mod:`.hungarian`)
``milp``                  P1      yes    scipy.optimize.milp / HiGHS (:mod:`.milp`)
``comp-aware``            P1      no     fastest devices first (:mod:`.baselines`)
``comm-aware``            P1      no     best channels first (:mod:`.baselines`)
``random``                P1      no     uniform memory-feasible assignment (:mod:`.baselines`)
========================  ======  =====  ==================================================

P1 splits the bandwidth equally (``B_k = B/L``); P2 optimises it jointly with the blocks.
Every scheme respects C1–C3 and reports infeasible only when no memory-feasible allocation
exists (:mod:`.memory`).

Multi-block devices (``max_blocks_per_device > 1``, issue 13): ``jbba`` solves P2' and ``ba``
P1' with fast methods (:mod:`.multiblock`; ``extra["exact"]`` says whether the answer is
proven optimal), ``milp`` solves P1' exactly (:mod:`.multiblock_milp`); the other schemes
raise ``UnsupportedInstanceError``.
"""

from loladeft.allocation.registry import SCHEMES, Solution, get_scheme, solve
from loladeft.allocation.result import AllocationResult

__all__ = ["SCHEMES", "AllocationResult", "Solution", "get_scheme", "solve"]
