"""The official GLUE metric of each task, computed with scikit-learn and scipy.

=========  =====================================  ==================
task       metrics                                main metric
=========  =====================================  ==================
cola       Matthews correlation                   ``matthews``
stsb       Pearson and Spearman correlation       ``pearson``
mrpc, qqp  accuracy and F1 (positive class 1)     ``accuracy``
others     accuracy (MNLI: matched; mismatched    ``accuracy``
           reported as ``accuracy_mm``)
=========  =====================================  ==================

The main metric is the one the Table I target ("90% of the centralized metric") is read
from; for MRPC it is accuracy, the number LoRA [8] reports for MRPC.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Main metric name per task.
MAIN_METRIC = {
    "cola": "matthews",
    "stsb": "pearson",
    "mrpc": "accuracy",
    "qqp": "accuracy",
    "sst2": "accuracy",
    "rte": "accuracy",
    "qnli": "accuracy",
    "mnli": "accuracy",
}


def task_metrics(task: str, predictions: Any, labels: Any) -> dict[str, float]:
    """Metrics of ``predictions`` against ``labels`` for ``task``.

    Parameters
    ----------
    task
        Lower-case GLUE task name.
    predictions
        Class indices, or scores for ``stsb``.
    labels
        Gold class indices, or gold scores for ``stsb``.

    Returns
    -------
    dict
        ``{name: value}`` with the main metric (:data:`MAIN_METRIC`) first.
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    y_pred = np.asarray(predictions)
    y_true = np.asarray(labels)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"predictions: shape {y_pred.shape} != labels shape {y_true.shape}")
    if task == "stsb":
        # a constant prediction has no correlation: report 0 rather than nan
        if np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
            return {"pearson": 0.0, "spearman": 0.0}
        return {
            "pearson": float(pearsonr(y_pred, y_true)[0]),
            "spearman": float(spearmanr(y_pred, y_true)[0]),
        }
    if task == "cola":
        return {
            "matthews": float(matthews_corrcoef(y_true, y_pred)),
            "accuracy": float(accuracy_score(y_true, y_pred)),
        }
    out = {"accuracy": float(accuracy_score(y_true, y_pred))}
    if task in ("mrpc", "qqp"):
        out["f1"] = float(f1_score(y_true, y_pred, pos_label=1, zero_division=0.0))
    return out
