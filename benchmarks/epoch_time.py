"""Epoch time of Burda's MNIST network at batch 20, 100 and 1000: bayesvae.fit against eager PyTorch.

The network, initialization and loss of ``mnist_loglik.py`` (784-200-200-50 tanh, Bernoulli,
N(0, I) prior, the ELBO with the analytic KL, Adam with eps 1e-4, lr 1e-3). Variants, each
timed as the wall clock of one steady-state epoch over ``--rows`` resident rows:

* ``torch``: a hand-written *eager* PyTorch loop (``TorchTrainer`` of ``mnist_loglik.py``)
  with ``torch.optim.Adam``'s default implementation (for-loop on a CPU, multi-tensor
  ``foreach`` on a GPU): the floor the issue names;
* ``torch-fused``: the same loop with torch's fused Adam (what ``fit`` uses);
* ``bayesvae``: ``bayesvae.fit`` with its defaults: the traced, uncaptured step;
* ``bayesvae-captured`` (CUDA only): ``fit(..., cuda_graphs=True)``, each full-batch step
  captured as one CUDA graph and replayed.

Repeats are interleaved (the variant order rotates every repeat); the table reports the
minimum and the median over repeats and the ratio to ``torch`` on the minima (< 1: faster
than eager PyTorch). A repeat of a bayesvae variant is one ``fit`` call of two epochs (the
first traces, warms up and captures); its second epoch is the measurement. A torch repeat is
one epoch of a trainer that has already run one.

Data: the first ``--rows`` rows of Larochelle's static binarized MNIST when ``shared/data``
is found (``--data-dir``), else synthetic Bernoulli(0.13) pixels (the epoch time does not
depend on the values). Usage::

    python benchmarks/epoch_time.py --device cuda                   # batch 20, 100, 1000
    python benchmarks/epoch_time.py --device cpu --threads 1 --batch-sizes 100 --rows 5000

Writes ``benchmarks/results/epoch_time_<device>.{md,json}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mnist_loglik as ml
import torch
from _timing import (
    Variant,
    interleaved,
    load_average,
    machine_info,
    markdown_table,
    ratio_rows,
    write_results,
)

import bayesvae as bv

RESULTS = Path(__file__).parent / "results"


def load_rows(rows: int, data_dir: str | None, device: torch.device, synthetic: bool = False) -> tuple[torch.Tensor, str]:
    try:
        if synthetic:
            raise ml.BenchmarkError("synthetic data asked for")
        d = ml.find_data_dir(data_dir)
        x = torch.from_numpy(bv.datasets.read_binarized_mnist(d / "binarized_mnist" / "binarized_mnist_train.amat.gz").x[:rows].copy())
        what = f"the first {x.shape[0]} rows of Larochelle's static binarized MNIST"
    except ml.BenchmarkError:
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(rows, ml.D, generator=g) < 0.13).float()
        what = f"{rows} synthetic rows of Bernoulli(0.13) pixels" + ("" if synthetic else " (no shared/data found)")
    return x.to(device), what


def protocol(batch_size: int, device: torch.device) -> ml.Protocol:
    return ml.Protocol(
        dataset="static", objective="meanfield", k=1, epochs=2, batch_size=batch_size, schedule="constant", lr=1e-3,
        adam_eps=1e-4, eval_samples=1, eval_chunk=1, test_rows=None, train_rows=None, active_rows=1, seed=0, torch_seed=0,
        test_binarization_seed=0, device=str(device), threads=torch.get_num_threads(),
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[20, 100, 1000])
    p.add_argument("--rows", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, nargs="+", default=None, help="torch threads (default: 1 and 2 on a CPU, torch's on a GPU)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--synthetic", action="store_true", help="synthetic rows even where MNIST is found")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    threads = args.threads or ([1, 2] if device.type == "cpu" else [torch.get_num_threads()])
    x, what = load_rows(args.rows, args.data_dir, device, args.synthetic)
    mean = x.double().mean(0).clamp(0.001, 0.999)
    out_bias = torch.log(mean / (1 - mean)).float()
    header = {**machine_info(device), "load_before": load_average(), "data": what}
    print(", ".join(f"{k}: {v}" for k, v in header.items()), flush=True)

    data = ml.Data(train=x, test=x[:1], active=x[:1], dynamic=False, out_bias=out_bias, description=what)
    tables, payload = [], {"header": header, "rows": args.rows, "batch_sizes": {}}
    for b in args.batch_sizes:
        proto = protocol(b, device)
        trainers = {name: ml.TorchTrainer(proto, data, device, ml.constant_schedule(1e-3), adam=adam) for name, adam in (("torch", "default"), ("torch-fused", "fused"))}
        for t in trainers.values():
            t.epoch(0)  # allocator, cuBLAS and optimizer state warmed up

        def torch_variant(name, trainers=trainers):
            def run():
                t = trainers[name]
                t.epoch(1)
                return t.times[-1]

            return run

        def fit_variant(cuda_graphs, b=b):
            def run():
                torch.manual_seed(0)
                model, guide = ml.build_bayesvae(out_bias.cpu())
                times: list[float] = []
                mark = [0.0]

                def callback(record):
                    ml.sync(device)
                    times.append(time.perf_counter() - mark[0])
                    mark[0] = time.perf_counter()

                mark[0] = time.perf_counter()
                result = bv.fit(model, guide, x, elbo="meanfield", epochs=2, batch_size=b, lr=1e-3, adam_eps=1e-4, device=str(device), seed=0, callback=callback, cuda_graphs=cuda_graphs, progress=False)
                run.captured = result.config.cuda_graphs
                return times[-1]

            run.captured = None
            return run

        variants = [
            Variant("torch", torch_variant("torch"), "hand-written eager loop, torch.optim.Adam default"),
            Variant("torch-fused", torch_variant("torch-fused"), "hand-written eager loop, fused Adam"),
            Variant("bayesvae", fit_variant(False), "bayesvae.fit defaults (traced step, uncaptured)"),
        ]
        if device.type == "cuda":
            variants.append(Variant("bayesvae-captured", fit_variant(True), "bayesvae.fit(cuda_graphs=True)"))
        res = interleaved(variants, lambda v: v.fn(), repeats=args.repeats, threads=threads)
        rows = ratio_rows(res, [v.name for v in variants], "torch", threads)
        steps = -(-args.rows // b)
        for r in rows:
            r["batch"] = b
            r["steps_per_s"] = steps / r["min"]
            fn = next(v.fn for v in variants if v.name == r["variant"])
            r["captured"] = getattr(fn, "captured", None)
        tables += rows
        payload["batch_sizes"][str(b)] = {"rows": rows, "load_before": res.load_before, "load_after": res.load_after}
        for r in rows:
            print(f"batch {b:5d} threads {r['threads']} {r['variant']:20s} epoch min {r['min']:.4f} s median {r['median']:.4f} s  {r['steps_per_s']:.0f} steps/s  ratio to torch: min {r['ratio_min']:.3f} median {r['ratio_median']:.3f}  captured {r['captured']}", flush=True)
    header["load_after"] = load_average()
    lines = [
        f"# Epoch time at batch {', '.join(map(str, args.batch_sizes))}: bayesvae.fit vs eager PyTorch ({device.type})",
        "",
        "Generated by `benchmarks/epoch_time.py` (see its docstring). Burda's MNIST network, meanfield ELBO, Adam eps 1e-4;",
        f"{what}; one steady-state epoch per repeat, {args.repeats} interleaved repeats; ratios to `torch` on the minima (< 1: faster).",
        "",
        f"- machine: {header.get('cpu')}, {header.get('cores')} cores, device {header.get('device')}"
        + (f" ({header['gpu']}, CUDA {header.get('cuda')})" if header.get("gpu") else "")
        + f"; load before {header['load_before']}, after {header['load_after']}",
        f"- versions: torch {header['torch']}, pyro {header['pyro']}, bayesvae {header['bayesvae']} ({header.get('bayesvae_source')})",
        "",
    ]
    lines += markdown_table(
        tables,
        [("batch", "batch", "d"), ("threads", "threads", "d"), ("variant", "variant", ""), ("captured", "captured", ""), ("epoch min (s)", "min", ".4f"), ("median (s)", "median", ".4f"),
         ("spread", "spread", ".2f"), ("steps/s", "steps_per_s", ".0f"), ("ratio (min)", "ratio_min", ".3f"), ("ratio (median)", "ratio_median", ".3f")],
    )
    out = Path(args.out) if args.out else RESULTS / f"epoch_time_{device.type}"
    md = write_results(out, payload, lines)
    print(f"wrote {md} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
