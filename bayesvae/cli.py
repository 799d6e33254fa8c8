"""Command-line interface: ``bayesvae fit | evaluate | compare | report``.

Parsing needs nothing but the standard library: torch, Pyro, ArviZ and the package's
models are imported inside the subcommands, so ``bayesvae --help`` and ``bayesvae fit
--help`` answer at once (the package root is lazy too, PEP 562, so importing this module
imports no torch).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "PRIORS", "LIKELIHOODS"]

logger = logging.getLogger("bayesvae")


# ---------------------------------------------------------------------------------------------
# Names at the CLI boundary -> objects


#: Names of ``--prior``. Only the names, for ``--help`` without importing torch: what each
#: builds lives in :data:`bayesvae.models.catalog.PRIORS` (a test checks that they agree).
PRIORS = ("gaussian", "ibp", "ibp-weighted", "ard", "two-level", "mixture", "vamp")


def _likelihoods(data_dim: int) -> dict[str, Callable[[], Any]]:
    from bayesvae import models

    return {
        "bernoulli": models.Bernoulli,
        "continuous-bernoulli": models.ContinuousBernoulli,
        "gaussian": lambda: models.Gaussian(data_dim=data_dim),
        "gaussian-heteroscedastic": lambda: models.Gaussian(heteroscedastic=True),
        "poisson": models.Poisson,
    }


LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian", "gaussian-heteroscedastic", "poisson")


def _choose(kind: str, name: str, table: dict[str, Any]) -> Any:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(table)}")
    return table[name]


def _load_data(spec: str, *, likelihood: str | None, binarize: str):
    import numpy as np

    from bayesvae import datasets

    if binarize == "auto":
        embedded_intensity = spec == "digits"
        binarize_now = embedded_intensity and likelihood == "bernoulli"
    else:
        binarize_now = binarize == "yes"
    if binarize_now and spec == "digits":
        logger.info("binarizing the embedded digits at 0.5 for the Bernoulli likelihood")
        return datasets.digits(binarize=True)
    data = datasets.load(spec)
    if binarize_now:
        x = data.x
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"--binarize yes needs data in [0, 1]; {spec} has range [{x.min():g}, {x.max():g}]")
        data = datasets.Dataset(
            x=(x > 0.5).astype(np.float32),
            labels=data.labels,
            image_shape=data.image_shape,
            columns=data.columns,
            name=data.name + " (binarized)",
            description=data.description,
        )
    return data


# ---------------------------------------------------------------------------------------------
# Subcommands


def _cmd_fit(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    import bayesvae as bv
    from bayesvae import plots
    from bayesvae.models.catalog import PriorRequest, build_prior

    if args.likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {args.likelihood!r}; choose one of {list(LIKELIHOODS)}")
    if not 0 <= args.validation_fraction < 1:  # also refuses NaN
        raise ValueError(f"--validation-fraction must lie in [0, 1) (0 trains on all rows); got {args.validation_fraction}")
    data = _load_data(args.data, likelihood=args.likelihood, binarize=args.binarize)
    if args.validation_fraction > 0:
        train, valid = _split(data, args.validation_fraction, args.seed)
    else:
        train, valid = data, None
    torch.manual_seed(args.seed)
    likelihood = _choose("likelihood", args.likelihood, _likelihoods(train.d))()
    hidden = tuple(args.hidden)
    outputs = likelihood.num_outputs(train.d)
    # the decoder mirrors the encoder: its hidden widths from the latent side are hidden[::-1]
    request = PriorRequest(latent_dim=args.latent_dim, out_features=outputs, hidden=hidden[::-1], alpha=args.alpha, components=args.components, data_dim=train.d, unit_interval=args.likelihood in ("bernoulli", "continuous-bernoulli"))
    prior = build_prior(args.prior, request)
    decoder = prior.make_decoder(outputs, hidden=hidden[::-1], activation=args.activation)
    model = bv.VAE(prior=prior, likelihood=likelihood, decoder=decoder)
    guide = bv.AmortizedGuide(model, hidden=hidden, activation=args.activation, flows=args.flows)
    if callable(getattr(prior, "init_from", None)):  # pseudo-inputs start at training rows (the guide bound its encoder)
        prior.init_from(train.x[:] if hasattr(train.x, "to_tensor") else train.x, seed=args.seed)  # a lazy split's rows are read here
    out = Path(args.out)
    bar = tqdm(total=args.epochs, desc="fit", unit="epoch", disable=args.quiet)

    def progress(record: dict[str, float]) -> None:
        text = {"elbo": f"{record['elbo']:.3f}"}
        if "val_elbo" in record:
            text["val_elbo"] = f"{record['val_elbo']:.3f}"
        bar.set_postfix(text)
        bar.update(int(record["epoch"]) - bar.n)

    try:
        result = bv.fit(
            model,
            guide,
            train,
            elbo=args.elbo,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            num_particles=args.num_particles,
            device=args.device,
            seed=args.seed,
            validation=valid,
            checkpoint=out,
            resume=args.resume,
            overwrite=args.overwrite,
            jit=False if args.no_jit else None,
            cuda_graphs=args.cuda_graphs,
            distributed=args.distributed,
            distributed_timeout=args.distributed_timeout,
            callback=progress,
        )
    finally:
        bar.close()
    if args.distributed and _rank() != 0:
        return 0  # rank 0 wrote the checkpoint; it writes the run's other files too
    # fit's checkpoint already holds the final epoch (with optimizer and RNG state for --resume)
    (out / "cli.json").write_text(json.dumps({"data": args.data, "binarize": args.binarize, "validation_fraction": args.validation_fraction, "seed": args.seed, "likelihood": args.likelihood}, indent=2))
    for name, fig in (
        ("history.png", plots.plot_history(result)),
        ("reconstructions.png", plots.plot_reconstructions(result, train)),
        ("prior_samples.png", plots.plot_prior_samples(result, seed=args.seed)),
    ):
        fig.savefig(out / name, dpi=100)
    last = result.history.iloc[-1]
    msg = f"ELBO per point {last['elbo']:.3f}"
    if "val_elbo" in result.history:
        msg += f", validation ELBO {last['val_elbo']:.3f}"
    print(f"{msg}; {result.elapsed:.1f} s of training; saved to {out}/")
    return 0


def _held_out(args: argparse.Namespace, run: str) -> Any:
    """The evaluation data: by default the validation rows held out when the run was fitted."""
    made = Path(run) / "cli.json"
    how = json.loads(made.read_text()) if made.exists() else {}
    spec = args.data or how.get("data")
    if spec is None:
        raise ValueError(f"{run} was not written by 'bayesvae fit'; pass --data")
    same = args.data is None or args.data == how.get("data")
    binarize = args.binarize if args.binarize != "auto" or not same else how.get("binarize", "auto")
    data = _load_data(spec, likelihood=how.get("likelihood") if same else None, binarize=binarize)
    if args.split == "all" or not same:
        return data
    fraction = how.get("validation_fraction", 0.0)
    if not fraction:
        raise ValueError(f"{run} was fitted on all rows of {spec} (no held-out split); pass --split all or other --data")
    return _split(data, fraction, how.get("seed", 0))[1]


def _split(data: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """``data.split``; a memory-mapped ``.npy`` is split lazily (same rows, nothing copied)."""
    from bayesvae.streaming import is_disk_backed, split_on_disk

    if is_disk_backed(data.x):
        return split_on_disk(data, fraction, seed)
    return data.split(test_fraction=fraction, seed=seed)


def _write_table(frame, out: str | None, stem: str) -> None:
    from bayesvae.compare import to_markdown

    print(to_markdown(frame))
    if out:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path / f"{stem}.csv")
        (path / f"{stem}.md").write_text(to_markdown(frame) + "\n")
        print(f"wrote {path / stem}.csv and .md")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import bayesvae as bv
    from bayesvae.evaluation import evaluate

    fit = bv.load(args.run, device=args.device)
    x = _held_out(args, args.run)
    frame = evaluate(fit, x, num_samples=args.num_samples, seed=args.seed)
    frame.index = [Path(args.run).name]
    _write_table(frame, args.out, "evaluation")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import bayesvae as bv
    from bayesvae.compare import compare

    fits = {Path(run).name: bv.load(run, device=args.device) for run in args.runs}
    x = _held_out(args, args.runs[0])
    frame = compare(fits, x, num_samples=args.num_samples, seed=args.seed)
    _write_table(frame, args.out, "comparison")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import bayesvae as bv
    from bayesvae.report import report

    fit = bv.load(args.run, device=args.device)
    x = _held_out(args, args.run)
    path = report(fit, x, args.out, title=args.title or f"bayesvae report: {Path(args.run).name}", num_samples=args.num_samples)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# Parser


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", help="'digits' or 'digits-binary' (embedded, no download), or a path: .csv, .parquet, .npy, MNIST IDX (-idx3-ubyte[.gz]), binarized MNIST .amat[.gz], Frey Face .mat (default: digits)")
    p.add_argument("--binarize", choices=("auto", "yes", "no"), default="auto", help="threshold [0,1] data at 0.5; 'auto' binarizes the embedded digits when the likelihood is Bernoulli (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda[:k]' (default: cpu)")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    _add_data_args(p)
    p.set_defaults(data=None)
    p.add_argument("--split", choices=("held-out", "all"), default="held-out", help="'held-out': the validation rows the run held out when it was fitted (same data, fraction and seed, read from the run's cli.json); 'all': every row of --data (default: held-out)")
    p.add_argument("--num-samples", type=int, default=1000, help="importance samples K per data point (default: 1000)")


def _version() -> str:
    from bayesvae import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``bayesvae`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="bayesvae",
        description="Variational autoencoders as Bayesian latent-variable models: fit them by SVI, evaluate held-out log p(x) with standard errors, compare models, and write diagnostic reports.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="fit, evaluate, compare or report; COMMAND --help for its options")

    p = sub.add_parser("fit", help="fit a VAE by stochastic variational inference", description="Fit prior x decoder x likelihood with an amortized Gaussian guide by SVI; writes the saved fit (fit.safetensors, config.json), history.csv and PNGs of the ELBO curve, reconstructions and prior samples to --out. Re-running with --resume continues from the checkpoint in --out.")
    _add_data_args(p)
    p.add_argument("--prior", default="gaussian", help=f"prior p(z), one of {list(PRIORS)} (default: gaussian)")
    p.add_argument("--likelihood", default="bernoulli", help=f"observation model p(x|z), one of {list(LIKELIHOODS)} (default: bernoulli)")
    p.add_argument("--latent-dim", type=int, default=8, help="latent dimension (IBP: truncation level; two-level: bottom layer, the top has half) (default: 8)")
    p.add_argument("--hidden", type=int, nargs="*", default=[128], help="encoder hidden widths; the decoder mirrors them (default: 128)")
    p.add_argument("--activation", default="relu", help="hidden-layer nonlinearity (default: relu)")
    p.add_argument("--alpha", type=float, default=2.0, help="IBP concentration alpha (default: 2)")
    p.add_argument("--components", type=int, default=10, help="mixture prior components; pseudo-inputs of --prior vamp (default: 10)")
    p.add_argument("--elbo", choices=("trace", "meanfield", "iwae"), default="meanfield", help="Trace_ELBO (Monte Carlo), TraceMeanField_ELBO (analytic KL) or the importance-weighted bound with --num-particles samples (default: meanfield)")
    p.add_argument("--flows", type=int, default=0, help="inverse autoregressive flow maps on the encoder's Gaussian (a richer q(z|x)) (default: 0)")
    p.add_argument("--epochs", type=int, default=50, help="passes over the data (default: 50)")
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size (default: 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--num-particles", type=int, default=1, help="ELBO samples per step (default: 1)")
    p.add_argument("--validation-fraction", type=float, default=0.2, help="rows held out for the validation ELBO; 0 uses all rows for training (default: 0.2)")
    p.add_argument("--out", default="runs/fit", help="output directory (default: runs/fit)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing fit in --out (otherwise refused)")
    p.add_argument("--distributed", action="store_true", help="data-parallel over the processes of a torchrun launch (torchrun --nproc_per_node=P -m bayesvae fit --distributed ...)")
    p.add_argument("--distributed-timeout", type=float, default=300.0, metavar="SECONDS", help="seconds a process waits for the others before failing with an error naming the unresponsive rank (default: 300)")
    p.add_argument("--no-jit", action="store_true", help="run every training step eagerly through Pyro's effect handlers instead of replaying a traced step (same numbers, slower)")
    p.add_argument("--cuda-graphs", action="store_true", help="with --device cuda: capture each full-batch step as one CUDA graph and replay it (fast at small batches; the non-finite check is applied once an epoch)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("evaluate", help="held-out log p(x) +- SE, ELBO parts, active units of one fit", description="Evaluate a saved fit on held-out data: importance-sampled log p(x) with its standard error, ELBO decomposition, active units. Prints a table and writes CSV/markdown to --out.")
    p.add_argument("run", help="directory written by 'bayesvae fit'")
    _add_eval_args(p)
    p.add_argument("--out", default=None, help="directory for evaluation.csv / evaluation.md")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("compare", help="rank several fits on the same held-out data", description="Compare saved fits on the same held-out data, ranked by log p(x), with the paired standard error of each difference to the best. Prints a table and writes CSV/markdown to --out.")
    p.add_argument("runs", nargs="+", help="directories written by 'bayesvae fit'")
    _add_eval_args(p)
    p.add_argument("--out", default=None, help="directory for comparison.csv / comparison.md")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("report", help="self-contained HTML (and Markdown) diagnostic report of a fit", description="Write a self-contained HTML report (images embedded) and its Markdown twin: metrics, PSIS k-hat verdict, posterior predictive checks, plots.")
    p.add_argument("run", help="directory written by 'bayesvae fit'")
    _add_eval_args(p)
    p.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--title", default=None, help="report title")
    p.set_defaults(func=_cmd_report)
    return parser


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayesvae`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"bayesvae {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
