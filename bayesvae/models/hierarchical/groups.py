r"""A multilevel (random-effects) prior: latent codes grouped around partially pooled group means."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch

from bayesvae._checks import positive_int
from bayesvae._registry import register
from bayesvae.data import as_groups, as_tensor
from bayesvae.models.hierarchical._common import (
    ScalePrior,
    as_scale_prior,
    global_factor,
    summarize,
)
from bayesvae.models.priors import GlobalSite, LocalSite, Prior, PriorSummary, Z

__all__ = [
    "GroupPrior",
    "group_codes",
    "GROUP_MEAN",
    "GROUP_LOC",
    "SIGMA_WITHIN",
    "SIGMA_BETWEEN",
]

#: Site of the group means :math:`\mu_g` (global, shape ``(G, L)``).
GROUP_MEAN = "group_mean"
#: Site of the population mean :math:`m` (global, shape ``(L,)``).
GROUP_LOC = "group_loc"
#: Site of the within-group scale :math:`\sigma_w` (global, scalar).
SIGMA_WITHIN = "sigma_within"
#: Site of the between-group scale :math:`\sigma_b` (global, scalar).
SIGMA_BETWEEN = "sigma_between"


@register
class GroupPrior(Prior):
    r"""Multilevel normal prior: data points in :math:`G` groups share a group mean.

    .. math::

        \sigma_w \sim p_w, \quad \sigma_b \sim p_b, \quad
        m \sim \mathcal N(0, s_m^2 I_L), \quad
        \mu_g \mid m, \sigma_b \sim \mathcal N(m, \sigma_b^2 I_L) \ (g = 1..G), \\
        z_n \mid \mu, \sigma_w \sim \mathcal N(\mu_{g(n)}, \sigma_w^2 I_L).

    :math:`\sigma_w, \sigma_b, m, \mu_{1:G}` are **global** sites (``"sigma_within"``,
    ``"sigma_between"``, ``"group_loc"``, ``"group_mean"``) inferred by the guide's
    non-amortized mean-field part (log-normal on the scales, Gaussian on the means); ``"z"``
    is **local**, inferred by the encoder. The decoder reads :math:`z`.

    Parameters
    ----------
    latent_dim : int
        :math:`L`.
    groups : int
        :math:`G`, the number of groups; labels passed to ``fit(..., groups=)`` are
        ``0..G-1``.
    within_prior, between_prior : ScalePrior or str, default "half_cauchy"
        Hyperpriors on :math:`\sigma_w` and :math:`\sigma_b` (see :class:`ScalePrior`).
    loc_scale : float, default 1.0
        :math:`s_m`, the prior scale of the population mean.

    Notes
    -----
    **Partial pooling.** Given the codes, :math:`\mu_g` has the normal--normal posterior
    mean [1]_ (ch. 5)

    .. math::

        \mathbb E[\mu_g \mid z, m] = m + \lambda_g (\bar z_g - m), \qquad
        \lambda_g = \frac{n_g \sigma_b^2}{n_g \sigma_b^2 + \sigma_w^2},

    so a small group's mean is shrunk toward :math:`m` and a large group's follows its own
    average. The mean-field optimum of :math:`q(\mu_g)` has this form with :math:`\bar z_g`
    the group's average of the encoder's means; :meth:`pooling` reports the observed
    ratio :math:`|\hat\mu_g - \hat m| / |\bar z_g - \hat m|` beside :math:`\lambda_g`.

    **Identifiability.** The decoder can rescale and shift :math:`z`, so only
    :math:`\sigma_b / \sigma_w` (hence :math:`\lambda_g`) and the group means up to an
    affine map are identified by the data; the hyperpriors fix the rest weakly.

    **KL per site.** ``"z"`` and ``"group_mean"``, ``"group_loc"``: analytic Gaussian KL
    under ``TraceMeanField_ELBO`` (given the sampled hyperparameters, one draw per
    particle); ``"sigma_within"``, ``"sigma_between"``: Monte Carlo. Under minibatching only
    ``"z"`` (inside the data plate) is rescaled by :math:`N / B`.

    .. warning:: The amortized encoder sees :math:`x_n` but not :math:`g(n)`, so
       :math:`q(z_n \mid x_n)` cannot borrow strength from the group: this is accurate when
       the likelihood pins :math:`z_n` much more tightly than :math:`\sigma_w` does.

    References
    ----------
    .. [1] A. Gelman, J. B. Carlin, H. S. Stern, D. B. Dunson, A. Vehtari and D. B. Rubin,
       *Bayesian Data Analysis*, 3rd ed., CRC Press, 2013, sec. 5.4-5.5 (eq. 5.20).

    Examples
    --------
    >>> from bayesvae.models import VAE, Gaussian
    >>> from bayesvae.nn import MLP
    >>> prior = GroupPrior(2, groups=3)
    >>> model = VAE(prior=prior, likelihood=Gaussian(scale=1.0), decoder=MLP(2, 5))
    >>> model.sample(4, groups=torch.tensor([0, 0, 1, 2]))["z"].shape
    torch.Size([4, 2])
    """

    def __init__(
        self,
        latent_dim: int,
        groups: int,
        *,
        within_prior: ScalePrior | str = "half_cauchy",
        between_prior: ScalePrior | str = "half_cauchy",
        loc_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.num_groups = positive_int("groups", groups)
        self.within_prior = as_scale_prior(within_prior, "within_prior")
        self.between_prior = as_scale_prior(between_prior, "between_prior")
        if not (isinstance(loc_scale, (int, float)) and 0 < loc_scale < float("inf")):
            raise ValueError(f"loc_scale must be a positive finite number, got {loc_scale!r}")
        self.loc_scale = float(loc_scale)

    def global_sites(self) -> tuple[GlobalSite, ...]:
        L, G = self.latent_dim, self.num_groups
        return (
            GlobalSite(SIGMA_WITHIN, (), "lognormal", self.within_prior.init_log(), 0.1),
            GlobalSite(SIGMA_BETWEEN, (), "lognormal", self.between_prior.init_log(), 0.1),
            GlobalSite(GROUP_LOC, (L,), "normal", 0.0, 0.1),
            GlobalSite(GROUP_MEAN, (G, L), "normal", 0.0, 0.1),
        )

    def local_sites(self) -> tuple[LocalSite, ...]:
        return (LocalSite(Z, self.latent_dim, "normal"),)

    def sample_globals(self, *, like: torch.Tensor) -> dict[str, torch.Tensor]:
        L, G = self.latent_dim, self.num_groups
        s_w = pyro.sample(SIGMA_WITHIN, self.within_prior.distribution(like, ()))
        s_b = pyro.sample(SIGMA_BETWEEN, self.between_prior.distribution(like, ()))
        m = pyro.sample(
            GROUP_LOC,
            dist.Normal(like.new_zeros(L), like.new_full((L,), self.loc_scale)).to_event(1),
        )
        # scalars and m may carry leading particle dims: broadcast them to (..., G, L)
        loc = m.unsqueeze(-2).expand(*m.shape[:-1], G, L)
        scale = s_b[..., None, None].expand_as(loc)
        mu = pyro.sample(GROUP_MEAN, dist.Normal(loc, scale).to_event(2))
        return {SIGMA_WITHIN: s_w, SIGMA_BETWEEN: s_b, GROUP_LOC: m, GROUP_MEAN: mu}

    def sample_locals(
        self,
        batch_size: int,
        globals_: dict[str, torch.Tensor],
        *,
        like: torch.Tensor,
        groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        g = self.check_groups(groups, batch_size)
        mu = globals_[GROUP_MEAN].index_select(-2, g)
        if mu.dim() > 2:
            # (..., 1, B, L): the size-1 dim is the data plate's slot of the global's batch
            mu = mu.squeeze(-3)
        scale = globals_[SIGMA_WITHIN][..., None, None]
        if scale.dim() > 2:
            scale = scale.squeeze(-3)
        return {Z: pyro.sample(Z, dist.Normal(mu, scale.expand_as(mu)).to_event(1))}

    def check_groups(self, groups: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """Validate per-row labels of a batch: a long vector of length ``batch_size`` in 0..G-1."""
        if groups is None:
            raise ValueError(
                f"GroupPrior needs group labels: pass groups= (one label 0..{self.num_groups - 1} per row) to fit, evaluate_elbo or model.sample"
            )
        if not isinstance(groups, torch.Tensor) or groups.dim() != 1 or groups.shape[0] != batch_size:
            shape = tuple(groups.shape) if isinstance(groups, torch.Tensor) else type(groups).__name__
            raise ValueError(
                f"GroupPrior needs one group label per row: got labels of shape {shape} for a batch of {batch_size} rows"
            )
        if groups.is_floating_point() or groups.dtype == torch.bool:
            raise ValueError(f"group labels must be an integer tensor, got dtype {groups.dtype}")
        # the range check reads two numbers back from the device: free on the CPU, a sync per
        # step on a GPU, so there it runs only while Pyro validation is on (fit's first step)
        if groups.numel() and (groups.device.type == "cpu" or pyro.is_validation_enabled()):
            lo, hi = int(groups.min()), int(groups.max())
            if lo < 0 or hi >= self.num_groups:
                raise ValueError(
                    f"group label {lo if lo < 0 else hi} is outside 0..{self.num_groups - 1}: the GroupPrior was built with groups={self.num_groups}"
                )
        return groups

    # Reports ---------------------------------------------------------------------------------
    @torch.no_grad()
    def group_means(self, fit: Any) -> torch.Tensor:
        r"""Posterior means :math:`\mathbb E_q \mu_g`, shape ``(G, L)``."""
        return global_factor(fit.guide, GROUP_MEAN).mean.detach()

    @torch.no_grad()
    def hyperparameters(self, fit: Any) -> dict[str, Any]:
        r"""Posterior means of :math:`m` (``(L,)`` tensor), :math:`\sigma_w`, :math:`\sigma_b` (floats)."""
        return {
            GROUP_LOC: global_factor(fit.guide, GROUP_LOC).mean.detach(),
            SIGMA_WITHIN: float(global_factor(fit.guide, SIGMA_WITHIN).mean),
            SIGMA_BETWEEN: float(global_factor(fit.guide, SIGMA_BETWEEN).mean),
        }

    @torch.no_grad()
    def pooling(self, fit: Any, data: Any, groups: Any) -> pd.DataFrame:
        r"""Partial pooling of each group mean, observed and as the normal--normal model predicts.

        Parameters
        ----------
        fit : FitResult
            A fit with this prior and an encoder guide (one with ``posterior(x)``, e.g.
            :class:`~bayesvae.guides.AmortizedGuide`).
        data : array-like of shape (N, d)
            Data whose encoder means give :math:`\bar z_g` (usually the training data).
        groups : array-like of int, shape (N,)
            Their labels; every group ``0..G-1`` must have at least one row.

        Returns
        -------
        pandas.DataFrame
            One row per group (index ``group``): ``n`` (:math:`n_g`), ``shrinkage`` (the
            observed :math:`|\hat\mu_g - \hat m| / |\bar z_g - \hat m|`), ``expected``
            (:math:`\lambda_g` with the posterior means of :math:`\sigma_w, \sigma_b`
            plugged in), ``mu_l`` and ``zbar_l`` for each latent coordinate ``l``.

        Raises
        ------
        ValueError
            Labels of the wrong length, negative, non-integer or NaN, a label ``>= G``, or
            a group with no rows in ``data``.
        """
        posterior = getattr(fit.guide, "posterior", None)
        if posterior is None:
            raise TypeError(
                f"pooling needs an encoder guide with posterior(x) (AmortizedGuide); got {type(fit.guide).__name__}"
            )
        ref = self.group_means(fit)
        x, info = as_tensor(data, device=ref.device)
        g = as_groups(groups, info.num_data, device=ref.device)
        self.check_groups(g, info.num_data)
        n = torch.bincount(g, minlength=self.num_groups)
        empty = torch.nonzero(n == 0).flatten().tolist()
        if empty:
            raise ValueError(
                f"groups {empty} have no data points in the data given, so their average code is undefined; pass data that cover every group 0..{self.num_groups - 1}"
            )
        zmean = posterior(x.to(dtype=ref.dtype))[Z].mean
        zbar = torch.zeros_like(ref).index_add_(0, g, zmean) / n[:, None].to(ref.dtype)
        hyper = self.hyperparameters(fit)
        m = hyper[GROUP_LOC]
        vb, vw = hyper[SIGMA_BETWEEN] ** 2, hyper[SIGMA_WITHIN] ** 2
        nf = n.to(ref.dtype)
        frame = pd.DataFrame(
            {
                "n": n.cpu().numpy(),
                "shrinkage": ((ref - m).norm(dim=-1) / (zbar - m).norm(dim=-1)).cpu().numpy(),
                "expected": (nf * vb / (nf * vb + vw)).cpu().numpy(),
            },
            index=pd.RangeIndex(self.num_groups, name="group"),
        )
        for ell in range(self.latent_dim):
            frame[f"mu_{ell}"] = ref[:, ell].cpu().numpy()
            frame[f"zbar_{ell}"] = zbar[:, ell].cpu().numpy()
        return frame

    @torch.no_grad()
    def summaries(self, guide, x=None, *, groups=None) -> tuple[PriorSummary, ...]:
        r"""The group effects :math:`\mu_g` with 90% intervals, and their pooling on ``x``.

        The pooling table (:meth:`pooling`) is added when ``x`` and ``groups`` are given,
        the guide encodes data (``posterior(x)``) and every group has a row in ``x``.
        """
        fit = SimpleNamespace(guide=guide)
        s = summarize(global_factor(guide, GROUP_MEAN), 0.9)
        mean, lower, upper = (s[k].detach().double().cpu().numpy() for k in ("mean", "lower", "upper"))
        g, ell = np.indices(mean.shape)
        effects = pd.DataFrame(
            {
                "site": GROUP_MEAN,
                "element": [f"{a},{b}" for a, b in zip(g.ravel(), ell.ravel())],
                "mean": mean.ravel(),
                "lower": lower.ravel(),
                "upper": upper.ravel(),
            }
        )
        effects.attrs["level"] = 0.9
        out = [
            PriorSummary(
                "group_effects",
                "Group effects",
                "intervals",
                effects,
                "Group means mu_g (group, latent coordinate): posterior mean and 90% interval.",
            )
        ]
        covered = groups is not None and x is not None and bool(
            (torch.bincount(torch.as_tensor(groups).long().flatten(), minlength=self.num_groups) > 0).all()
        )
        if covered and hasattr(guide, "posterior"):
            out.append(
                PriorSummary(
                    "group_pooling",
                    "Partial pooling of the group means",
                    "table",
                    self.pooling(fit, x, groups)[["n", "shrinkage", "expected"]],
                    "Observed shrinkage |mu_g - m| / |zbar_g - m| of each group mean against the normal-normal prediction n vb / (n vb + vw).",
                )
            )
        return tuple(out)

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "GroupPrior",
            "latent_dim": self.latent_dim,
            "groups": self.num_groups,
            "within_prior": self.within_prior.to_config(),
            "between_prior": self.between_prior.to_config(),
            "loc_scale": self.loc_scale,
        }


def group_codes(labels: Any) -> tuple[np.ndarray, pd.Index]:
    """Integer codes ``0..G-1`` for a column of group labels (any hashable values).

    Parameters
    ----------
    labels : array-like or pandas.Series of shape (N,)
        e.g. a DataFrame column ``df["school"]``.

    Returns
    -------
    codes : ndarray of int64, shape (N,)
        Pass as ``fit(..., groups=codes)``.
    categories : pandas.Index
        ``categories[g]`` is the label of group ``g``; ``len(categories)`` is ``G``.

    Raises
    ------
    ValueError
        Missing labels (NaN / None) or a label column that is not one-dimensional.
    """
    values = labels.to_numpy() if isinstance(labels, (pd.Series, pd.Index)) else np.asarray(labels)
    if values.ndim != 1:
        raise ValueError(f"group labels must be one-dimensional, got shape {values.shape}")
    missing = pd.isna(values)
    if missing.any():
        raise ValueError(
            f"group labels have {int(missing.sum())} missing values (NaN/None), first at row {int(np.flatnonzero(missing)[0])}; drop those rows or give them a group"
        )
    codes, categories = pd.factorize(values, sort=True)
    return codes.astype(np.int64), pd.Index(categories)
