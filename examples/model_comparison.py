"""Compare priors on held-out digits: log p(x) +- SE, ELBO parts, active units, inference gaps.

The embedded 8x8 digits (binarized) are split into training and held-out rows. One VAE per
prior -- standard normal, Indian buffet process, automatic relevance determination, a two-level
hierarchy, a mixture of Gaussians (each included when this version of bayesvae has it) -- is
fitted with the same decoder width, likelihood and encoder, then all are scored on the held-out
rows by ``bayesvae.compare.compare``: the importance-weighted log p(x) (Burda et al. 2016) with
its standard error, ranked with the *paired* standard error of each model's difference to the
best, beside the ELBO, its KL, the ELBO-surgery mutual information, the active units and the
amortization gap.

Priors with global latents (IBP sticks, ARD weights) pay their global KL, shared out over the
held-out points, inside log p(x); the IBP model is scored with its discrete indicators.

Run ``python examples/model_comparison.py --help`` for the settings; the defaults take about a
minute on a laptop CPU, ``--epochs 1 --num-samples 10 --gap-points 5`` a few seconds.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import pandas as pd
import torch

import bayesvae as bv
from bayesvae.compare import compare, to_markdown


def _priors(latent: int, hidden: int, data_dim: int) -> dict[str, Callable[[], bv.VAE]]:
    """Model builders by name, for the priors this version of bayesvae provides."""
    from bayesvae.models import VAE, Bernoulli, GaussianPrior

    def with_mlp(prior) -> VAE:
        return VAE(prior=prior, likelihood=Bernoulli(), decoder=bv.MLP(prior.latent_dim, data_dim, hidden=(hidden,)))

    builders: dict[str, Callable[[], VAE]] = {
        "gaussian": lambda: with_mlp(GaussianPrior(latent)),
        "gaussian_1": lambda: with_mlp(GaussianPrior(1)),  # deliberately too small
    }
    try:
        from bayesvae.models import IBPPrior

        builders["ibp"] = lambda: with_mlp(IBPPrior(3.0, truncation=2 * latent))
    except ImportError:
        pass
    try:
        from bayesvae.models import ARDDecoder, ARDPrior, HierarchicalLatentPrior, MixturePrior

        builders["ard"] = lambda: VAE(
            prior=ARDPrior(latent, width=hidden), likelihood=Bernoulli(), decoder=ARDDecoder(hidden, data_dim)
        )
        builders["two_level"] = lambda: with_mlp(HierarchicalLatentPrior(dims=(max(1, latent // 2), latent)))
        builders["mixture"] = lambda: with_mlp(MixturePrior(latent, components=10))
    except ImportError:
        builders["gaussian_2"] = lambda: with_mlp(GaussianPrior(2))
        builders["gaussian_16"] = lambda: with_mlp(GaussianPrior(16))
    return builders


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--latent", type=int, default=8, help="latent dimension")
    parser.add_argument("--hidden", type=int, default=64, help="hidden width of encoder and decoder")
    parser.add_argument("--num-samples", type=int, default=200, help="importance samples per held-out point")
    parser.add_argument("--gap-points", type=int, default=50, help="held-out points for the amortization gap")
    parser.add_argument("--priors", default=None, help="comma-separated subset (default: all available)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the table as markdown to this file")
    args = parser.parse_args(argv)

    data = bv.datasets.digits(binarize=True)
    train, test = data.split(0.25, seed=args.seed)
    builders = _priors(args.latent, args.hidden, data.x.shape[1])
    names = args.priors.split(",") if args.priors else list(builders)
    unknown = sorted(set(names) - set(builders))
    if unknown:
        parser.error(f"unknown prior(s) {unknown}; available: {sorted(builders)}")

    fits = {}
    for name in names:
        torch.manual_seed(args.seed)
        model = builders[name]()
        guide = bv.AmortizedGuide(model, hidden=(args.hidden,))
        anneal = getattr(model.prior, "anneal", None)  # the IBP's relaxation temperature
        fits[name] = bv.fit(
            model, guide, train, epochs=args.epochs, batch_size=128, lr=3e-3, seed=args.seed, callback=anneal
        )

    table = compare(fits, test, num_samples=args.num_samples, seed=args.seed, gap_points=args.gap_points)
    shown = ["rank", "log_px", "log_px_se", "d_log_px", "d_se", "elbo", "kl", "mutual_information",
             "active_units", "latent_units", "amortization_gap", "num_parameters", "training_seconds"]
    print(f"{len(test.x)} held-out digits, {args.num_samples} importance samples per point (nats; higher is better)")
    print(to_markdown(table[shown]))
    best = table.index[0]
    for name in table.index[1:]:
        row = table.loc[name]
        verdict = "clearly worse" if row["d_log_px"] > 2 * row["d_se"] else "not distinguishable"
        print(f"{name}: {row['d_log_px']:.2f} +- {row['d_se']:.2f} nats below {best} ({verdict})")
    if args.out:
        with open(args.out, "w") as f:
            f.write(to_markdown(table) + "\n")
    return table


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    main()
