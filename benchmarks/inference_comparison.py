r"""The full inference grid of ``examples/inference_comparison.py``, written to ``results/``.

One MLP VAE (decoder L-H-784 or L-H-64, Bernoulli likelihood; encoder D-H-(L, L), diagonal
Gaussian) is fitted in every valid configuration of

* prior: ``GaussianPrior`` N(0, I) or ``VampPrior`` (K_u pseudo-inputs through the same
  encoder, initialized from training rows, constrained to (0, 1));
* KL warm-up: none (beta = 1) or ``LinearWarmup(epochs=W)`` (beta from 0 to 1 over W epochs);
* objective and gradient: ELBO (``trace``) with ``reparam`` / ``stl``; IWAE with K = 5 and
  K = 10 with ``reparam`` / ``stl`` / ``dreg`` -- 2 x 2 x 8 = 32 fits per data set,

from the same initial weights and seed, and scored on the same held-out rows: log p^(x)
(IWAE estimate, ``--eval-samples`` draws) with its SE over points and the paired difference
to the best configuration with its paired SE; amortization and approximation gaps (Cremer et
al. 2018) on ``gap_points`` random held-out rows; active units (Burda et al. 2016, threshold
0.01); median seconds per training epoch at beta = 1 (warm-up epochs run untraced and are
left out); whether ``fit`` judged the ELBO converged. The procedure is the example's
(``fit_and_score``), imported from it, so the two cannot drift apart.

Protocols (``PROTOCOLS``):

* ``digits``: the embedded 8x8 digits binarized at 0.5, 80/20 split (seed 0): 1437 train,
  360 held out; L = 8, H = 64, K_u = 50, 100 epochs, warm-up 20, batch 128, lr 3e-3,
  log p^(x) with 1000 draws, gaps on 100 rows.
* ``mnist`` (shortened; only when ``../shared/data/binarized_mnist`` exists): Larochelle's
  binarized MNIST, a random 5 000 of the 50 000 training rows and a random 500 of the
  10 000 test rows (the test file is sorted by class), L = 20, H = 200, K_u = 100, 5 epochs,
  warm-up 2, batch 128, lr 1e-3, 200 draws, gaps on 50 rows (at most 200 steps). Far from the
  converged numbers in the papers (hundreds of epochs on a GPU); it ranks configurations on a
  budget, and none of its fits has converged.

Run time here (2 cores shared with other jobs, AMD EPYC, 1 torch thread): ``--datasets digits``
took 8.6 minutes and ``--datasets mnist`` 6.9 minutes (the results header has the measured
total and the load average).

Every run is merged into ``results/inference_comparison.{json,md}`` by data set and protocol
(a rerun replaces its own section). Seconds per epoch are measured configuration by
configuration in one process, not interleaved: on a shared machine they carry its noise
(the load average before and after is in the header); compare them within a run.

Examples
--------
``python benchmarks/inference_comparison.py --datasets digits``;
smoke test: ``python benchmarks/inference_comparison.py --datasets digits --quick --out /tmp/ic``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from _results import merge_runs
from _timing import load_average, machine_info, markdown_table

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results" / "inference_comparison"


def _example() -> Any:
    """The example module (loaded by path: it shares this script's file name)."""
    spec = importlib.util.spec_from_file_location("inference_comparison_example", ROOT / "examples" / "inference_comparison.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


study = _example()

#: Settings per data set: the example's arguments.
PROTOCOLS: dict[str, list[str]] = {
    "digits": ["--epochs", "100", "--warmup", "0,20", "--latent", "8", "--hidden", "64", "--components", "50", "--lr", "3e-3"],
    # shortened to fit a session: 5 000 training rows, 5 epochs, K = 200 on 500 test rows, gaps on 50 rows
    "mnist": ["--epochs", "5", "--warmup", "0,2", "--latent", "20", "--hidden", "200", "--components", "100", "--lr", "1e-3", "--train-rows", "5000", "--test-rows", "500", "--eval-samples", "200", "--gap-points", "50", "--gap-steps", "200"],
}
COMMON = ["--priors", "gaussian,vamp", "--objectives", "trace,iwae5,iwae10", "--gradients", "reparam,stl,dreg", "--batch-size", "128", "--eval-samples", "1000", "--gap-points", "100", "--gap-steps", "300", "--seed", "0"]
QUICK = ["--epochs", "2", "--warmup", "0,1", "--eval-samples", "20", "--gap-points", "10", "--gap-steps", "10", "--train-rows", "300", "--test-rows", "60"]

TABLE = [
    ("prior", "prior", ""), ("warm-up", "warmup", "d"), ("objective", "objective", ""), ("gradient", "gradient", ""),
    ("log p̂(x) ± SE", "log_px_txt", ""), ("vs best ± paired SE", "d_txt", ""),
    ("amortization gap ± SE", "amort_txt", ""), ("approximation gap ± SE", "approx_txt", ""),
    ("active units", "active_units", "d"), ("s / epoch", "s_per_epoch", ".3f"), ("converged", "converged", ""),
]


def _pm(v: float, se: float) -> str:
    return f"{v:.2f} ± {se:.2f}"


def render(runs: list[dict[str, Any]]) -> list[str]:
    """The Markdown results file: one section per data set and protocol."""
    lines = [
        "# Inference comparison: gradient estimator × objective × prior × KL warm-up",
        "",
        "One MLP VAE (Bernoulli likelihood, diagonal-Gaussian amortized encoder), fitted from the same initial weights",
        "and seed in every valid configuration; scored on the same held-out rows. log p̂(x): IWAE estimate in nats per",
        "point (higher is better), ± SE over points; 'vs best': the paired difference to the top row, ± std of the",
        "per-point differences / √N. Gaps (Cremer et al. 2018): amortization L[q*] − L[q_φ], approximation log p − L[q*],",
        "q* a per-point Gaussian optimized from the encoder's output (≤ 300 steps), on random held-out rows. Active units:",
        "Var_x E_q[z_u] > 0.01. s / epoch: median training time per epoch at β = 1 (warm-up epochs run untraced and are",
        "left out), measured one configuration after another. Generated by `benchmarks/inference_comparison.py`",
        "(its docstring has the protocol); the procedure is `examples/inference_comparison.py`'s `fit_and_score`.",
    ]
    for run in runs:
        p, m = run["protocol"], run["machine"]
        rows = []
        for i, r in enumerate(run["table"]):
            rows.append({
                **r,
                "log_px_txt": _pm(r["log_px"], r["log_px_se"]),
                "d_txt": "best" if i == 0 else _pm(r["d_log_px"], r["d_se"]),
                "amort_txt": _pm(r["amortization_gap"], r["amortization_gap_se"]),
                "approx_txt": _pm(r["approximation_gap"], r["approximation_gap_se"]),
            })
        lines += [
            "",
            f"## {run['key']}",
            "",
            f"- data: {p['data']}",
            f"- protocol: {p['settings']}",
            f"- seeds: {p['seeds']}",
            f"- machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s), device {m['device']}; "
            f"python {m['python']}, torch {m['torch']}, pyro {m['pyro']}, bayesvae {m['bayesvae']} ({m['bayesvae_source']})",
            f"- run: `{run['command']}`, finished {run['finished']}, {run['total_seconds'] / 60:.1f} min in all; "
            f"load average before {run['load_before']}, after {run['load_after']}",
            "",
            *markdown_table(rows, TABLE),
            "",
            *run["reading"],
        ]
        buys = study.effects(pd.DataFrame(run["table"]))
        if len(buys):
            lines += [
                "",
                "What each switch buys: level minus baseline, averaged over the pairs of configurations that agree in every",
                "other switch (min..max over the pairs); Δ amortization gap likewise.",
                "",
                *markdown_table(
                    [{**b, "range": f"{b['min']:.2f} .. {b['max']:.2f}"} for b in buys.to_dict("records")],
                    [("switch", "switch", ""), ("level", "level", ""), ("pairs", "pairs", "d"), ("mean Δ log p̂(x)", "d_log_px", ".2f"), ("range", "range", ""), ("mean Δ amortization gap", "d_amortization_gap", ".2f")],
                ),
            ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist", help="comma-separated subset of digits,mnist (mnist is skipped when its files are absent)")
    parser.add_argument("--data-dir", type=Path, default=study.DATA_DIR)
    parser.add_argument("--quick", action="store_true", help="tiny settings, a smoke test (not a measurement)")
    parser.add_argument("--out", type=Path, default=OUT, help="results path without suffix")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the runs in the .json")
    args = parser.parse_args(argv)
    if args.render:
        runs = json.loads(args.out.with_suffix(".json").read_text())["runs"]
        args.out.with_suffix(".md").write_text("\n".join(render(runs)) + "\n")
        return 0
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="the ELBO was still rising", category=RuntimeWarning)
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if dataset == "mnist" and not (args.data_dir / "binarized_mnist" / "binarized_mnist_train.amat.gz").exists():
            print(f"mnist: no binarized MNIST in {args.data_dir}; skipped")
            continue
        # a data set's own settings override the common ones; --quick overrides both
        settings = ["--dataset", dataset, "--data-dir", str(args.data_dir), *COMMON, *PROTOCOLS[dataset], *(QUICK if args.quick else [])]
        example_args = study.parser().parse_args(settings)
        load_before, start = load_average(), time.perf_counter()
        table = study.run(example_args)
        total = time.perf_counter() - start
        text = " ".join(a for a in settings if a != str(args.data_dir) and a != "--data-dir")
        run = {
            "key": f"{dataset}{' (quick: not a measurement)' if args.quick else ''}",
            "command": "inference_comparison.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "total_seconds": total,
            "load_before": load_before,
            "load_after": load_average(),
            "machine": machine_info("cpu"),
            "protocol": {
                "data": f"{dataset}: {table.attrs['train_rows']} training rows, {table.attrs['test_rows']} held out",
                "settings": text,
                "seeds": f"weights torch.manual_seed({example_args.seed}) (decoder) and ({example_args.seed + 1}) (encoder); fit seed={example_args.seed}; split/subsets seed {example_args.seed}; log p̂(x), gaps seed=0",
            },
            "table": table.to_dict("records"),
            "reading": study.reading(table),
        }
        md = merge_runs(args.out, run, render)
        print()
        print(study.render(table))
        print("\n".join(run["reading"]))
        print(f"{dataset}: {total / 60:.1f} min; wrote {md} and {md.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
