"""Linear-Gaussian data: PPCA, factor analysis, a linear VAE and a non-linear VAE side by side.

Data are simulated from probabilistic PCA (``bayesvae.datasets.linear_gaussian``) and split
into training and held-out rows. On the training rows we fit

* PPCA in closed form (Tipping & Bishop 1999),
* factor analysis by EM (Bishop 2006, Section 12.2.4),
* the same PPCA model as a VAE -- affine decoder, isotropic Gaussian noise -- by SVI with the
  linear amortized encoder ``AmortizedGuide(model, hidden=())``,
* a non-linear VAE (one hidden layer in decoder and encoder, per-feature Gaussian noise),

and print the held-out log-likelihood per point of each: exact for the three linear models,
and for the VAEs also the held-out ELBO and, when ``bayesvae.evaluation`` provides it, the
importance-weighted estimate of log p(x). A linear VAE trained by SVI should land on the
closed-form maximum likelihood, with an ELBO that closes the gap (Lucas et al. 2019,
arXiv:1911.02469); the non-linear VAE can do no better than the true, linear model.

Run ``python examples/linear_vs_vae.py --help`` for the settings; the defaults take well
under a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

import bayesvae
from bayesvae.guides import AmortizedGuide
from bayesvae.models import VAE, Gaussian, GaussianPrior
from bayesvae.models.linear import factor_analysis_em, model_log_likelihood, ppca, ppca_mle
from bayesvae.nn import MLP


def _importance_estimate():
    """``log_marginal_likelihood`` from ``bayesvae.evaluation``, or None where it is absent."""
    try:
        from bayesvae.evaluation import log_marginal_likelihood
    except ImportError:
        return None
    return log_marginal_likelihood


def _svi(model, guide, x, *, epochs: int, lr: float, seed: int) -> None:
    """Full-batch SVI: two thirds of the epochs at ``lr``, the rest at ``lr / 10``."""
    first = max(1, 2 * epochs // 3)
    bayesvae.fit(model, guide, x, epochs=first, batch_size=None, lr=lr, elbo="meanfield", seed=seed)
    bayesvae.fit(
        model, guide, x, epochs=max(1, epochs - first), batch_size=None, lr=lr / 10,
        elbo="meanfield", seed=seed + 1,
    )


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="simulated rows (20%% held out)")
    parser.add_argument("--dim", type=int, default=20, help="data dimension D")
    parser.add_argument("--latent", type=int, default=3, help="latent dimension L")
    parser.add_argument("--noise", type=float, default=0.5, help="noise standard deviation")
    parser.add_argument("--epochs", type=int, default=3000, help="full-batch SVI epochs per VAE")
    parser.add_argument("--hidden", type=int, default=64, help="hidden width of the non-linear VAE")
    parser.add_argument("--samples", type=int, default=500, help="importance samples for log p(x)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    data, truth = bayesvae.datasets.linear_gaussian(
        args.n, args.dim, args.latent, noise=args.noise, seed=args.seed
    )
    train, test = data.split(0.2, seed=args.seed)
    iwae = _importance_estimate()
    rows = []

    # Closed-form PPCA and EM factor analysis: exact held-out log-likelihood.
    pp = ppca_mle(train.x, args.latent)
    fa = factor_analysis_em(train.x, args.latent, seed=args.seed)
    for label, est in (("PPCA (closed form)", pp), ("FA (EM)", fa)):
        rows.append({"model": label, "exact log p(x)": est.log_prob(test.x).mean().item()})

    # The same PPCA model as a VAE with a linear encoder, fitted by SVI.
    linear = ppca(args.dim, args.latent)
    encoder = AmortizedGuide(linear, hidden=())
    _svi(linear, encoder, train.x, epochs=args.epochs, lr=0.02, seed=args.seed)
    rows.append(
        {
            "model": "linear VAE (SVI)",
            "exact log p(x)": model_log_likelihood(linear, test.x).mean().item(),
            "model_obj": (linear, encoder),
        }
    )

    # A non-linear VAE on the same rows.
    deep = VAE(
        prior=GaussianPrior(args.latent),
        likelihood=Gaussian(data_dim=args.dim),
        decoder=MLP(args.latent, args.dim, hidden=(args.hidden,)),
    )
    deep_encoder = AmortizedGuide(deep, hidden=(args.hidden,))
    _svi(deep, deep_encoder, train.x, epochs=args.epochs, lr=0.01, seed=args.seed)
    rows.append({"model": "non-linear VAE", "model_obj": (deep, deep_encoder)})

    for row in rows:
        pair = row.pop("model_obj", None)
        if pair is None:
            continue
        row["ELBO"] = bayesvae.evaluate_elbo(*pair, test.x, num_particles=10, seed=args.seed)
        if iwae is not None:
            row[f"IWAE (K={args.samples})"] = iwae(pair, test.x, num_samples=args.samples, seed=args.seed).mean

    table = pd.DataFrame(rows).set_index("model")
    print(
        f"Held-out log-likelihood per point: {test.n} rows of simulated PPCA data "
        f"(D={args.dim}, L={args.latent}, sigma={args.noise}); models fitted on {train.n} rows."
    )
    print(table.to_string(float_format=lambda v: f"{v:.4f}", na_rep="-"))
    return table


if __name__ == "__main__":
    main()
