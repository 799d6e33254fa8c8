"""Training throughput: bayesvae.fit against a hand-written PyTorch loop of the same network.

The classic MLP VAE (784-400-20, ReLU, Bernoulli likelihood, standard normal prior, Adam)
on synthetic MNIST-shaped binary data. Every variant trains the same architecture with
the same minibatching (a fresh permutation per epoch, rows gathered from a resident tensor,
one Adam over all parameters). Variants run interleaved, in one process, repeated; the
table reports the minimum and the median over interleaved repeats (at 1 and 2 torch threads) of the
steady-state epoch time (epochs after the first) and the ratio to the pure-PyTorch floor,
judged on the minima (see ``benchmarks/_timing.py``):

* ``torch``: the floor, a hand-written loop (analytic KL for "meanfield", the Monte Carlo
  ``log q - log p`` for "trace"), with torch's fused Adam, the implementation ``fit`` uses
  (so the ratio is the package's overhead, not a difference of optimizers);
  ``torch-default-adam``: the same loop with ``torch.optim.Adam``'s default implementation
  (for-loop on a CPU), what a hand-written loop usually gets.
* ``bayesvae``: ``bayesvae.fit(model, guide, x, elbo=...)``, per-epoch times read from its
  ``callback`` (so the once-per-fit data validation is excluded; it is reported separately
  as the whole-call ratio). The default traces the step's loss once per batch shape and
  replays it (``jit=None``: on for the package's own components); ``bayesvae-eager`` runs
  every step through Pyro's effect handlers (``jit=False``).
* ``pyro-svi``: the same model written plainly in Pyro (``pyro.module``, ``SVI``,
  ``pyro.optim.Adam``, validation at its default), the usual way.
* ``pyro-jit``: the same with Pyro's ``JitTrace_ELBO`` / ``JitTraceMeanField_ELBO`` as
  shipped (last partial batch dropped: a trace needs one shape); ``pyro-jit-fixed``: with
  the mean-field JIT's cache bug fixed (see ``FixedJitTraceMeanField_ELBO``).

Usage: ``python benchmarks/train_throughput.py [--n 10000] [--repeats 7] [--epochs 3] [--threads 1 2]``;
``--quick`` is a smoke test (tiny data, 3 repeats), not a measurement. Run it alone on the machine.
Writes ``benchmarks/results/train_throughput.{md,json}``.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from _timing import (
    Variant,
    interleaved,
    load_average,
    machine_info,
    markdown_table,
    ratio_rows,
    write_results,
)
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
    TraceMeanField_ELBO,
)
from torch import nn

import bayesvae as bv

D, H, L = 784, 400, 20
RESULTS = Path(__file__).parent / "results"


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(D, H), nn.Linear(H, 2 * L)

    def forward(self, x):
        loc, raw = self.fc2(F.relu(self.fc1(x))).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-5


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(L, H), nn.Linear(H, D)

    def forward(self, z):
        return self.fc2(F.relu(self.fc1(z)))


def fused_adam(params, lr):
    """torch's fused Adam where it exists (what bayesvae.fit uses), else the default one."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=lr)


def torch_loop(x, batch, epochs, elbo, on_epoch, adam=fused_adam):
    enc, dec = Encoder(), Decoder()
    params = [*enc.parameters(), *dec.parameters()]
    opt = adam(params, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    n = x.shape[0]
    for _ in range(epochs):
        total = torch.zeros(())
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            xb = x[perm[start : start + batch]]
            loc, scale = enc(xb)
            z = loc + scale * torch.randn_like(loc)
            nll = F.binary_cross_entropy_with_logits(dec(z), xb, reduction="sum")
            if elbo == "meanfield":
                kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum() - scale.log().sum()
            else:
                eps = (z - loc) / scale
                kl = (-0.5 * eps.pow(2) - scale.log()).sum() + 0.5 * z.pow(2).sum()
            loss = (nll + kl) * (n / xb.shape[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        float(total)
        on_epoch()


def bayesvae_fit(x, batch, epochs, elbo, on_epoch, jit=None):
    model = bv.VAE(prior=bv.GaussianPrior(L), likelihood=bv.Bernoulli(), decoder=bv.MLP(L, D, hidden=(H,)))
    guide = bv.AmortizedGuide(model, hidden=(H,))
    quiet = {"progress": False} if "progress" in inspect.signature(bv.fit).parameters else {}  # no progress bar in a timed fit
    bv.fit(model, guide, x, elbo=elbo, epochs=epochs, batch_size=batch, lr=1e-3, seed=0, jit=jit, callback=lambda r: on_epoch(), **quiet)


def bayesvae_eager(x, batch, epochs, elbo, on_epoch):
    bayesvae_fit(x, batch, epochs, elbo, on_epoch, jit=False)


class FixedJitTraceMeanField_ELBO(JitTraceMeanField_ELBO):
    """pyro-ppl 1.9.2's JitTraceMeanField_ELBO tests for a cache attribute named
    ``_loss_and_surrogate_loss`` but stores the compiled loss as ``_differentiable_loss``,
    so it re-traces and re-compiles on every step. Checking the attribute it stores fixes it."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if getattr(self, "_differentiable_loss", None) is not None:
            kwargs["_pyro_model_id"] = id(model)
            kwargs["_pyro_guide_id"] = id(guide)
            return self._differentiable_loss(*args, **kwargs)
        return super().differentiable_loss(model, guide, *args, **kwargs)


def pyro_svi(x, batch, epochs, elbo, on_epoch, jit=None):
    pyro.clear_param_store()
    enc, dec = Encoder(), Decoder()
    n = x.shape[0]

    def model(xb):
        pyro.module("decoder", dec)
        with pyro.plate("data", n, subsample=torch.arange(xb.shape[0])):
            z = pyro.sample("z", dist.Normal(xb.new_zeros(xb.shape[0], L), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=xb)

    def guide(xb):
        pyro.module("encoder", enc)
        with pyro.plate("data", n, subsample=torch.arange(xb.shape[0])):
            loc, scale = enc(xb)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    if jit is None:
        loss = Trace_ELBO() if elbo == "trace" else TraceMeanField_ELBO()
    elif jit == "shipped":
        loss = JitTrace_ELBO() if elbo == "trace" else JitTraceMeanField_ELBO()
    else:
        loss = JitTrace_ELBO() if elbo == "trace" else FixedJitTraceMeanField_ELBO()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), loss)
    gen = torch.Generator().manual_seed(0)
    # A traced (JIT) loss needs one batch shape: drop the last partial batch there.
    stop = n - n % batch if jit else n
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, stop, batch):
            total += svi.step(x[perm[start : start + batch]])
        on_epoch()


def pyro_jit(x, batch, epochs, elbo, on_epoch):
    pyro_svi(x, batch, epochs, elbo, on_epoch, jit="shipped")


def pyro_jit_fixed(x, batch, epochs, elbo, on_epoch):
    pyro_svi(x, batch, epochs, elbo, on_epoch, jit="fixed")


def _tutorial_functions():
    """A model and guide written as Pyro's tutorial writes them: methods of one module,
    ``pyro.module`` networks, an unscaled ``pyro.plate("data", x.shape[0])`` (bayesvae scales it)."""
    enc, dec = Encoder(), Decoder()

    class TutorialVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = enc, dec

        def model(self, x):
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], L), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

        def guide(self, x):
            pyro.module("encoder", self.encoder)
            with pyro.plate("data", x.shape[0]):
                loc, scale = self.encoder(x)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    vae = TutorialVAE()
    return vae.model, vae.guide


def bayesvae_user(x, batch, epochs, elbo, on_epoch, jit=None):
    model, guide = _tutorial_functions()
    bv.fit(model, guide, x, elbo=elbo, epochs=epochs, batch_size=batch, lr=1e-3, seed=0, jit=jit, callback=lambda r: on_epoch(), progress=False)


def bayesvae_user_eager(x, batch, epochs, elbo, on_epoch):
    bayesvae_user(x, batch, epochs, elbo, on_epoch, jit=False)


def torch_loop_default_adam(x, batch, epochs, elbo, on_epoch):
    return torch_loop(x, batch, epochs, elbo, on_epoch, adam=lambda params, lr: torch.optim.Adam(params, lr=lr))


VARIANTS: list[Variant] = [
    Variant("torch", torch_loop, "hand-written PyTorch loop (the floor), with the fused Adam that bayesvae.fit uses"),
    Variant("torch-default-adam", torch_loop_default_adam, "the same loop with torch.optim.Adam's default implementation"),
    Variant("bayesvae", bayesvae_fit, "bayesvae.fit, defaults (traced step)"),
    Variant("bayesvae-eager", bayesvae_eager, "bayesvae.fit(jit=False)"),
    Variant("user", bayesvae_user, "bayesvae.fit on a Pyro-tutorial-style model and guide (traced, checked)"),
    Variant("user-eager", bayesvae_user_eager, "the same, jit=False"),
    Variant("pyro-svi", pyro_svi, "Pyro SVI written plainly"),
    Variant("pyro-jit", pyro_jit, "Pyro JIT ELBO as shipped (last partial batch dropped)"),
    Variant("pyro-jit-fixed", pyro_jit_fixed, "Pyro JIT ELBO with the mean-field cache fixed"),
]
"""The rows. To time your own training function, append
``Variant("mine", fn, "what it is")`` where ``fn(x, batch, epochs, elbo, on_epoch)`` trains
for ``epochs`` epochs on the rows of ``x`` and calls ``on_epoch()`` after each epoch."""


def time_variant(fn, x, batch, epochs, elbo):
    """(median steady-state epoch seconds, whole call seconds per epoch) of one fit."""
    stamps = []
    t0 = time.perf_counter()
    fn(x, batch, epochs, elbo, lambda: stamps.append(time.perf_counter()))
    whole = time.perf_counter() - t0
    steady = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(steady), whole / epochs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="rows of synthetic binary data")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--elbos", nargs="+", default=["trace", "meanfield"], choices=["trace", "meanfield"])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats (>= 7 for a measurement)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to run each variant at")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed fit (>= 2)")
    parser.add_argument("--variants", nargs="+", default=[v.name for v in VARIANTS], choices=[v.name for v in VARIANTS])
    parser.add_argument("--quick", action="store_true", help="smoke test: n=512, batch 64, 3 repeats, 1 thread; not a measurement")
    parser.add_argument("--out", default=str(RESULTS / "train_throughput"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.batches, args.repeats, args.threads = 512, [64], 3, [1]
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up; steady state needs one more)")
    if "torch" not in args.variants:
        parser.error("--variants must include 'torch', the floor every ratio is taken against")
    variants = [v for v in VARIANTS if v.name in args.variants]
    torch.manual_seed(0)
    # MNIST-shaped binary data with structure (a random low-rank logit field), resident in memory.
    logits = torch.randn(args.n, 10) @ torch.randn(10, D) - 2.0
    x = torch.bernoulli(torch.sigmoid(logits))
    header = machine_info()
    header.update(n=args.n, repeats=args.repeats, epochs_per_fit=args.epochs, threads=args.threads, quick=args.quick)
    header["load_before"] = load_average()
    print(", ".join(f"{k}: {v}" for k, v in header.items()), flush=True)
    rows, loads = [], []
    for elbo in args.elbos:
        for batch in args.batches:
            print(f"{elbo} b={batch}", flush=True)
            result = interleaved(
                variants,
                lambda v, batch=batch, elbo=elbo: time_variant(v.fn, x, batch, args.epochs, elbo),
                repeats=args.repeats,
                threads=args.threads,
            )
            loads.append({"elbo": elbo, "batch": batch, "before": result.load_before, "after": result.load_after, "per_repeat": result.load_per_repeat})
            names = [v.name for v in variants]
            epoch_rows = ratio_rows(result, names, "torch", args.threads, key=lambda s: s[0])
            whole_rows = ratio_rows(result, names, "torch", args.threads, key=lambda s: s[1])
            for r, w in zip(epoch_rows, whole_rows):
                r.update(elbo=elbo, batch=batch, whole_min=w["min"], whole_ratio_min=w["ratio_min"])
                rows.append(r)
                print(
                    f"{elbo:9s} b={batch:5d} t={r['threads']} {r['variant']:15s} epoch min {r['min'] * 1e3:8.1f} ms  median {r['median'] * 1e3:8.1f} ms"
                    f"  spread {100 * r['spread']:5.1f}%  ratio(min) {r['ratio_min']:5.3f}  ratio(median) {r['ratio_median']:5.3f}  whole-call ratio(min) {r['whole_ratio_min']:5.3f}",
                    flush=True,
                )
    header["load_after"] = load_average()
    lines = [
        "# Training throughput: epoch time relative to a hand-written PyTorch loop",
        "",
        ", ".join(f"{k}: {v}" for k, v in header.items()),
        "",
        f"{args.repeats} interleaved repeats (variant order rotated each repeat) at each of {args.threads} torch threads.",
        "Per repeat: the median steady-state epoch time of one fit (epochs after the first). Across repeats:",
        "`min`, `median`, and `spread` = max/min - 1. **Ratios are judged on the minima** (noise on a shared",
        "machine only adds time); `ratio (median)` is shown beside. `whole-call ratio (min)`: the whole `fit`",
        "call per epoch, including its once-per-fit data validation and tracing.",
        f"Load average (1, 5, 15 min) before: {header['load_before']}, after: {header['load_after']}.",
        "",
    ]
    if args.quick or args.repeats < 7:
        lines += ["**Smoke run (fewer than 7 repeats or --quick): not a measurement.**", ""]
    for r in rows:
        r["min_ms"], r["median_ms"], r["spread_pct"] = r["min"] * 1e3, r["median"] * 1e3, 100 * r["spread"]
    lines += markdown_table(
        rows,
        [
            ("ELBO", "elbo", ""), ("batch", "batch", "d"), ("threads", "threads", "d"), ("variant", "variant", ""),
            ("epoch min (ms)", "min_ms", ".1f"), ("epoch median (ms)", "median_ms", ".1f"), ("spread (%)", "spread_pct", ".1f"),
            ("ratio (min)", "ratio_min", ".3f"), ("ratio (median)", "ratio_median", ".3f"), ("whole-call ratio (min)", "whole_ratio_min", ".3f"),
        ],
    )
    md = write_results(args.out, {"header": header, "variants": {v.name: v.description for v in variants}, "load": loads, "rows": rows}, lines)
    print(f"wrote {md} and .json")


if __name__ == "__main__":
    main()
