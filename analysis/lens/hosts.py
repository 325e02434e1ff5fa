"""Do the two classes' hosts come from one population? Per-parameter two-sample KS tests (issue 26).

On an unpaired design a host property whose distribution differs between positives and negatives is a
label a model can read without any arc (today's default data: brighter, more concentrated lens hosts).
Host-matched negatives must leave every host parameter indistinguishable between the classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

# what the simulator draws per host (datamodules/lens/simulate.py _draw_host), observing conditions included
HOST_PARAMETERS = ("host_mag", "host_n", "host_reff", "host_q", "host_g_r", "host_r_z", "psf_bin", "depth_bin")


def host_balance(frame: pd.DataFrame, columns: Sequence[str] = HOST_PARAMETERS, alpha: float = 0.05) -> pd.DataFrame:
    """Two-sample KS test of each host parameter, positives against negatives.

    Args:
        frame: A manifest (or ``simulate.host_table``) with ``label`` and the `columns`.
        columns: Host parameters to compare.
        alpha: Family-wise level; each test rejects at ``alpha / len(columns)`` (Bonferroni).

    Returns:
        One row per parameter: ``parameter, n_pos, n_neg, median_pos, median_neg, ks_stat, p_value, reject``.
    """
    pos, neg = frame[frame["label"] == 1], frame[frame["label"] == 0]
    level = alpha / len(columns)
    rows = []
    for col in columns:
        a, b = pos[col].to_numpy(dtype=float), neg[col].to_numpy(dtype=float)
        test = ks_2samp(a, b)
        rows.append(dict(parameter=col, n_pos=len(a), n_neg=len(b), median_pos=float(np.median(a)),
                         median_neg=float(np.median(b)), ks_stat=float(test.statistic), p_value=float(test.pvalue),
                         reject=bool(test.pvalue < level)))
    return pd.DataFrame(rows)
