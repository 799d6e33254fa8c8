r"""What each inference choice buys: gradient estimator, IWAE, VampPrior and KL warm-up on one VAE.

The model is held fixed -- p(x, z) = p(z) prod_d Bernoulli(x_d | f_theta(z)_d) with an MLP
decoder -- and only the inference around it changes:

* the **objective**: the ELBO (``elbo="trace"``) or the importance-weighted bound with K = 5 or
  10 samples per point (``elbo="iwae"``);
* the **gradient estimator** of that objective: the reparameterization gradient
  (``"reparam"``), sticking the landing (``"stl"``, Roeder et al. 2017: the score term of
  log q dropped) or, for IWAE only, the doubly reparameterized gradient (``"dreg"``, Tucker
  et al. 2019). DReG estimates the IWAE gradient and has no ELBO version here, so
  ``trace``/``dreg`` is not a configuration;
* the **prior**: N(0, I), or the VampPrior (Tomczak & Welling 2018), a mixture of the
  encoder's posteriors at learned pseudo-inputs (initialized from training rows). The prior
  is part of the model, so this is the one switch that changes p(x) itself;
* **KL warm-up**: the local KL term weighted by beta rising linearly from 0 to 1 over the
  first epochs (Bowman et al. 2016; Sonderby et al. 2016), or beta = 1 throughout.

Every configuration starts from the same decoder and encoder weights (seeded) and is
scored on the same held-out rows by

* log p^(x): the importance-weighted estimate with ``--eval-samples`` draws per point, and
  its difference to the best configuration with the *paired* standard error (the std of the
  per-point differences / sqrt(N): both are evaluated on the same points, so the spread
  between points cancels);
* the amortization gap  L[q*_n] - L[q_phi(z | x_n)]  and the approximation gap
  log p(x_n) - L[q*_n] (Cremer, Li & Duvenaud 2018), with q*_n a per-point Gaussian
  optimized from the encoder's output, on ``--gap-points`` random held-out rows;
* the number of active latent units (Burda et al. 2016: Var_x E_q[z_u] > 0.01);
* seconds per epoch of training (median over the epochs at beta = 1 after the first).

The defaults (Gaussian prior, no warm-up, ELBO and IWAE-5 with every valid estimator, 40
epochs on the 8x8 digits) take under a minute on a laptop CPU. The full grid::

    python examples/inference_comparison.py --priors gaussian,vamp --warmup 0,10 \
        --objectives trace,iwae5,iwae10 --epochs 100

(``benchmarks/inference_comparison.py`` runs it and writes the results table.)
``--dataset mnist`` uses Larochelle's binarized MNIST from ``../shared/data`` when it is there.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import bayesvae as bv
from bayesvae.evaluation import active_units, amortization_gap, log_marginal_likelihood
from bayesvae.models import VampPrior
from bayesvae.objectives import LinearWarmup

#: Objective name -> (``fit``'s ``elbo=``, samples per point).
OBJECTIVES = {"trace": ("trace", 1), "iwae5": ("iwae", 5), "iwae10": ("iwae", 10)}
#: Gradient estimators each objective has (DReG is an IWAE estimator).
GRADIENTS = {"trace": ("reparam", "stl"), "iwae": ("reparam", "stl", "dreg")}
PRIORS = ("gaussian", "vamp")
#: Where ``shared/data`` sits relative to this checkout (see shared/data/README.md).
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Config:
    """One way of fitting the model: prior, warm-up epochs (0: none), objective, gradient."""

    prior: str
    warmup: int
    objective: str
    gradient: str

    @property
    def elbo(self) -> str:
        return OBJECTIVES[self.objective][0]

    @property
    def particles(self) -> int:
        return OBJECTIVES[self.objective][1]

    @property
    def name(self) -> str:
        return f"{self.prior} | {f'warm-up {self.warmup}' if self.warmup else 'beta=1'} | {self.objective} | {self.gradient}"


def configurations(priors: list[str], warmups: list[int], objectives: list[str], gradients: list[str]) -> list[Config]:
    """Every valid combination of the choices, in grid order."""
    for name, allowed in (("prior", PRIORS), ("objective", OBJECTIVES)):
        chosen = priors if name == "prior" else objectives
        bad = [c for c in chosen if c not in allowed]
        if bad:
            raise ValueError(f"unknown {name} {bad}; choose from {list(allowed)}")
    bad = [g for g in gradients if g not in GRADIENTS["iwae"]]
    if bad:
        raise ValueError(f"unknown gradient {bad}; choose from {list(GRADIENTS['iwae'])}")
    return [
        Config(p, w, o, g)
        for p in priors
        for w in warmups
        for o in objectives
        for g in gradients
        if g in GRADIENTS[OBJECTIVES[o][0]]
    ]


def load(dataset: str, *, data_dir: Path, train_rows: int | None, test_rows: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary training and held-out rows: the digits split 80/20, or binarized MNIST train/test.

    Subsets are random rows (the MNIST test file is sorted by class, so a prefix is not a sample).
    """
    if dataset == "digits":
        train, test = bv.datasets.digits(binarize=True).split(test_fraction=0.2, seed=seed)
        xtr, xte = train.x, test.x
    elif dataset == "mnist":
        folder = Path(data_dir) / "binarized_mnist"
        if not (folder / "binarized_mnist_train.amat.gz").exists():
            raise FileNotFoundError(f"binarized MNIST not found in {folder}; see shared/data/README.md, or use --dataset digits")
        xtr = bv.datasets.read_binarized_mnist(folder / "binarized_mnist_train.amat.gz").x
        xte = bv.datasets.read_binarized_mnist(folder / "binarized_mnist_test.amat.gz").x
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose 'digits' or 'mnist'")
    rng = np.random.default_rng(seed)
    if train_rows is not None and train_rows < len(xtr):
        xtr = xtr[np.sort(rng.choice(len(xtr), train_rows, replace=False))]
    if test_rows is not None and test_rows < len(xte):
        xte = xte[np.sort(rng.choice(len(xte), test_rows, replace=False))]
    return np.ascontiguousarray(xtr, dtype=np.float32), np.ascontiguousarray(xte, dtype=np.float32)


def build(config: Config, xtr: np.ndarray, *, latent: int, hidden: int, components: int, seed: int) -> tuple[bv.VAE, bv.AmortizedGuide]:
    """The model and guide; decoder and encoder start from the same weights in every configuration."""
    data_dim = xtr.shape[1]
    torch.manual_seed(seed)
    decoder = bv.MLP(latent, data_dim, hidden=(hidden,))
    if config.prior == "vamp":
        prior = VampPrior(latent, data_dim, components=components, unit_interval=True)
    else:
        prior = bv.GaussianPrior(latent)
    model = bv.VAE(prior=prior, likelihood=bv.Bernoulli(), decoder=decoder)
    torch.manual_seed(seed + 1)  # the VampPrior's draw above must not shift the encoder's
    guide = bv.AmortizedGuide(model, hidden=(hidden,))  # binds its encoder to a VampPrior
    if config.prior == "vamp":
        prior.init_from(xtr, seed=seed)
    return model, guide


def seconds_per_epoch(history: pd.DataFrame) -> float:
    """Median training time of the epochs after the first at beta = 1 (warm-up steps run untraced)."""
    per_epoch = history["seconds"].diff().fillna(history["seconds"])
    steady = per_epoch.iloc[1:]
    if "kl_weight" in history:
        steady = steady[history["kl_weight"].iloc[1:] == 1.0]
    return float((steady if len(steady) else per_epoch).median())


def fit_and_score(config: Config, xtr: np.ndarray, xte: np.ndarray, args: argparse.Namespace) -> tuple[dict[str, Any], torch.Tensor]:
    """Fit one configuration and score it on the held-out rows; returns its row and per-point log p^(x)."""
    model, guide = build(config, xtr, latent=args.latent, hidden=args.hidden, components=args.components, seed=args.seed)
    fit = bv.fit(
        model, guide, xtr, elbo=config.elbo, num_particles=config.particles, gradient=config.gradient,
        kl_weight=LinearWarmup(epochs=config.warmup) if config.warmup else None,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, validation=xte, progress=False,
    )
    lml = log_marginal_likelihood(fit, xte, num_samples=args.eval_samples, seed=0)
    rows = np.random.default_rng(args.seed).permutation(len(xte))[: args.gap_points]
    gaps = amortization_gap(fit, xte[np.sort(rows)], num_samples=50, max_steps=args.gap_steps, seed=0).summary()
    row = {
        "prior": config.prior,
        "warmup": config.warmup,
        "objective": config.objective,
        "gradient": config.gradient,
        "log_px": lml.mean,
        "log_px_se": lml.se,
        "val_elbo": float(fit.history["val_elbo"].iloc[-1]),
        "amortization_gap": gaps["amortization_gap"],
        "amortization_gap_se": gaps["amortization_gap_se"],
        "approximation_gap": gaps["approximation_gap"],
        "approximation_gap_se": gaps["approximation_gap_se"],
        "active_units": active_units(fit, xte).num_active,
        "s_per_epoch": seconds_per_epoch(fit.history),
        "converged": bool(fit.converged),
    }
    return row, lml.per_point.detach().double()


def against_best(rows: list[dict[str, Any]], per_point: list[torch.Tensor]) -> pd.DataFrame:
    """The rows ranked by log p^(x), each with its difference to the best and the paired SE."""
    best = int(np.argmax([r["log_px"] for r in rows]))
    out = []
    for row, values in zip(rows, per_point):
        diff = values - per_point[best]
        se = float(diff.std(unbiased=True) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
        out.append({**row, "d_log_px": float(diff.mean()), "d_se": se})
    return pd.DataFrame(out).sort_values("log_px", ascending=False, kind="stable").reset_index(drop=True)


#: Columns of the printed table: (header, column, format).
COLUMNS = [
    ("prior", "prior", ""), ("warm-up", "warmup", "d"), ("objective", "objective", ""), ("gradient", "gradient", ""),
    ("log p(x)", "log_px", ".2f"), ("+-SE", "log_px_se", ".2f"),
    ("vs best", "d_log_px", ".2f"), ("paired SE", "d_se", ".2f"),
    ("amort. gap", "amortization_gap", ".2f"), ("+-SE", "amortization_gap_se", ".2f"),
    ("approx. gap", "approximation_gap", ".2f"), ("+-SE", "approximation_gap_se", ".2f"),
    ("active", "active_units", "d"), ("s/epoch", "s_per_epoch", ".3f"), ("converged", "converged", ""),
]


def render(table: pd.DataFrame) -> str:
    """The table as fixed-width text (one row per configuration, best first)."""
    shown = pd.DataFrame({h + " " * i: table[c].map(lambda v, f=f: format(v, f) if f else str(v)) for i, (h, c, f) in enumerate(COLUMNS)})
    shown.columns = [h for h, _, _ in COLUMNS]
    shown.iloc[0, [6, 7]] = "best"
    return shown.to_string(index=False)


def reading(table: pd.DataFrame) -> list[str]:
    """What the table says, in sentences: the best configuration and which others it beats."""
    best = table.iloc[0]
    warmup = f"warm-up over {best['warmup']} epoch(s)" if best["warmup"] else "no warm-up"
    tied = table[(table.index > 0) & (table["d_log_px"] > -2 * table["d_se"])]
    lines = [
        f"Best: {best['prior']} prior, {warmup}, "
        f"{best['objective']} with the {best['gradient']} gradient: log p^(x) = {best['log_px']:.2f} +- {best['log_px_se']:.2f} nats per point.",
        f"Within 2 paired SE of it: {len(tied)} of the other {len(table) - 1} configurations; "
        f"worse by more than that: {len(table) - 1 - len(tied)}.",
    ]
    if table["prior"].nunique() > 1:
        by = table.groupby("prior")["log_px"].max()
        lines.append("Best log p^(x) per prior: " + ", ".join(f"{p} {v:.2f}" for p, v in by.items()) + " (the prior changes the model; the other switches only its fit).")
    lines.append(
        f"Amortization gap {table['amortization_gap'].min():.2f}..{table['amortization_gap'].max():.2f}, "
        f"approximation gap {table['approximation_gap'].min():.2f}..{table['approximation_gap'].max():.2f} nats per point."
    )
    if not table["converged"].all():
        lines.append(f"{int((~table['converged']).sum())} of {len(table)} fits had not converged (ELBO still rising): a short schedule; --epochs for more.")
    return lines


#: The switches and the level each is measured against.
FACTORS = {"gradient": "reparam", "objective": "trace", "warmup": 0, "prior": "gaussian"}


def effects(table: pd.DataFrame) -> pd.DataFrame:
    """What each switch buys: level minus baseline, over pairs of configurations equal in every other switch.

    One row per (switch, level): the number of matched pairs and the mean, min and max of the
    differences in held-out log p^(x) and in the amortization gap.
    """
    out = []
    for factor, base in FACTORS.items():
        others = [f for f in FACTORS if f != factor]
        ref = table[table[factor] == base]
        for level in table[factor].unique():
            if level == base:
                continue
            pairs = table[table[factor] == level].merge(ref, on=others, suffixes=("", "_ref"))
            if len(pairs):
                d = pairs["log_px"] - pairs["log_px_ref"]
                gap = pairs["amortization_gap"] - pairs["amortization_gap_ref"]
                out.append({"switch": factor, "level": f"{level} vs {base}", "pairs": len(pairs), "d_log_px": d.mean(), "min": d.min(), "max": d.max(), "d_amortization_gap": gap.mean()})
    return pd.DataFrame(out, columns=["switch", "level", "pairs", "d_log_px", "min", "max", "d_amortization_gap"])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog="Comma-separated lists select the subset of the grid to run; invalid combinations (dreg without iwae) are skipped.")
    p.add_argument("--dataset", choices=("digits", "mnist"), default="digits", help="8x8 digits (embedded) or binarized MNIST from --data-dir")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR, help=f"folder holding binarized_mnist/ (default {DATA_DIR})")
    p.add_argument("--priors", default="gaussian", help=f"subset of {','.join(PRIORS)} (default gaussian)")
    p.add_argument("--warmup", default="0", help="comma-separated warm-up lengths in epochs, 0 for none (default 0)")
    p.add_argument("--objectives", default="trace,iwae5", help=f"subset of {','.join(OBJECTIVES)} (default trace,iwae5)")
    p.add_argument("--gradients", default="reparam,stl,dreg", help="subset of reparam,stl,dreg (default all)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--latent", type=int, default=8, help="latent dimension")
    p.add_argument("--hidden", type=int, default=64, help="hidden width of encoder and decoder")
    p.add_argument("--components", type=int, default=50, help="VampPrior pseudo-inputs")
    p.add_argument("--eval-samples", type=int, default=500, help="importance samples per point for log p(x)")
    p.add_argument("--gap-points", type=int, default=100, help="held-out rows for the gaps")
    p.add_argument("--gap-steps", type=int, default=300, help="most optimization steps of the per-point q*")
    p.add_argument("--train-rows", type=int, default=None, help="random subset of the training rows")
    p.add_argument("--test-rows", type=int, default=None, help="random subset of the held-out rows")
    p.add_argument("--seed", type=int, default=0)
    return p


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args: argparse.Namespace, log: Any = print) -> pd.DataFrame:
    """Fit and score every selected configuration; the table ranked by held-out log p^(x)."""
    grid = configurations(_names(args.priors), [int(w) for w in _names(args.warmup)], _names(args.objectives), _names(args.gradients))
    if not grid:
        raise ValueError("no valid configuration in the selection (dreg needs an iwae objective)")
    xtr, xte = load(args.dataset, data_dir=args.data_dir, train_rows=args.train_rows, test_rows=args.test_rows, seed=args.seed)
    log(f"{args.dataset}: {len(xtr)} training rows, {len(xte)} held out, {xtr.shape[1]} binary pixels; {len(grid)} configurations, {args.epochs} epochs each")
    rows, per_point = [], []
    for config in grid:
        row, values = fit_and_score(config, xtr, xte, args)
        log(f"  {config.name:<40} log p^(x) {row['log_px']:8.2f}   {row['s_per_epoch']:.3f} s/epoch")
        rows.append(row)
        per_point.append(values)
    table = against_best(rows, per_point)
    table.attrs.update(dataset=args.dataset, train_rows=len(xtr), test_rows=len(xte))
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parser().parse_args(argv)
    table = run(args)
    print()
    print(f"Held-out log p^(x) (K = {args.eval_samples}) in nats per point, higher is better; 'vs best' is the paired")
    print(f"difference to the top row. Gaps on {args.gap_points} held-out rows (q* = per-point Gaussian, <= {args.gap_steps} steps).")
    print(render(table))
    print()
    print("\n".join(reading(table)))
    buys = effects(table)
    if len(buys):
        print()
        print("What each switch buys (mean over configurations equal in every other switch; log p^(x) and amortization gap in nats):")
        print(buys.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return table


if __name__ == "__main__":
    import warnings

    torch.set_num_threads(1)  # the machine is shared; see shared/PERFORMANCE.md
    # a short schedule is the point here; the table's 'converged' column reports the verdict
    warnings.filterwarnings("ignore", message="the ELBO was still rising", category=RuntimeWarning)
    main()
