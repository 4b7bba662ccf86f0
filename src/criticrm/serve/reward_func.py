"""Deprecated: the reward functions moved to `criticrm.integrations` (one module per framework).

    OpenRLHF  criticrm/integrations/openrlhf.py   reward_func(queries, prompts, labels)
    verl      criticrm/integrations/verl.py       compute_score, compute_score_async, compute_score_batch

This path still works, by file or by import, and will be removed in a later release.
"""

import warnings

from criticrm.integrations.openrlhf import reward_func
from criticrm.integrations.verl import compute_score, compute_score_async, compute_score_batch

__all__ = ["compute_score", "compute_score_async", "compute_score_batch", "reward_func"]

warnings.warn("criticrm.serve.reward_func moved to criticrm.integrations.openrlhf (reward_func) and "
              "criticrm.integrations.verl (compute_score...); this path will be removed in a later release",
              DeprecationWarning, stacklevel=2)
