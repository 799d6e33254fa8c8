"""Figures of an Indian buffet process fit (matplotlib; functions return the Figure, show nothing)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ["plot_feature_usage"]

_COLUMNS = ("feature", "usage", "fraction_used", "expected_pi", "prior_pi")


def plot_feature_usage(usage: pd.DataFrame) -> Figure:
    r"""Posterior feature usage beside the IBP frequencies :math:`\mathbb E[\pi_k]`.

    Bars: the share of points whose posterior uses feature k
    (:math:`q(b_{nk} = 1 \mid x_n) > 1/2`) and the mean posterior probability; lines:
    :math:`\mathbb E_q[\pi_k]` under the fitted stick posterior and the prior's
    :math:`(\alpha/(1+\alpha))^k`; a dashed line at the activity threshold.

    Parameters
    ----------
    usage : pandas.DataFrame
        The output of :func:`bayesvae.models.ibp.feature_usage`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(usage, pd.DataFrame):
        raise TypeError(f"usage must be the DataFrame returned by feature_usage(), got {type(usage).__name__}")
    missing = [c for c in _COLUMNS if c not in usage.columns]
    if missing:
        raise ValueError(f"usage lacks the columns {missing}; pass the DataFrame returned by feature_usage()")
    k = usage["feature"].to_numpy()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.3 * len(k) + 2), 3.4))
    width = 0.4
    ax.bar(k - width / 2, usage["fraction_used"], width, label="share of points using k", color="tab:blue")
    ax.bar(k + width / 2, usage["usage"], width, label=r"mean $q(b_k = 1 \mid x)$", color="tab:cyan")
    ax.plot(k, usage["expected_pi"], "o-", color="tab:red", label=r"$\mathbb{E}_q[\pi_k]$ (fitted sticks)")
    ax.plot(k, usage["prior_pi"], "s--", color="tab:gray", ms=3, label=r"prior $\mathbb{E}[\pi_k]$")
    threshold = usage.attrs.get("threshold")
    if threshold is not None:
        ax.axhline(threshold, color="black", lw=0.8, ls=":", label=f"threshold {threshold:g}")
    num_active = usage.attrs.get("num_active", int(np.sum(usage.get("active", []))))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("feature k")
    ax.set_ylabel("frequency")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"IBP feature usage: {num_active} active of {len(k)}")
    ax.legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    return fig
