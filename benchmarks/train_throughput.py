"""Training throughput: bayesvae.fit against a hand-written PyTorch loop of the same network.

The classic MLP VAE (784-400-20, ReLU, Bernoulli likelihood, standard normal prior, Adam)
on synthetic MNIST-shaped binary data. Every variant trains the same architecture with
the same minibatching (a fresh permutation per epoch, rows gathered from a resident tensor,
one Adam over all parameters). Variants run interleaved, in one process, repeated; the
table reports medians of the steady-state epoch time (epochs after the first) and the
ratio to the pure-PyTorch floor:

* ``torch``: the floor, a hand-written loop (analytic KL for "meanfield", the Monte Carlo
  ``log q - log p`` for "trace").
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

Usage: ``python benchmarks/train_throughput.py [--n 10000] [--repeats 5] [--epochs 3]``.
Writes ``benchmarks/results/train_throughput.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
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


def torch_loop(x, batch, epochs, elbo, on_epoch):
    enc, dec = Encoder(), Decoder()
    params = [*enc.parameters(), *dec.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
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
    bv.fit(model, guide, x, elbo=elbo, epochs=epochs, batch_size=batch, lr=1e-3, seed=0, jit=jit, callback=lambda r: on_epoch())


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


VARIANTS = {
    "torch": torch_loop,
    "bayesvae": bayesvae_fit,
    "bayesvae-eager": bayesvae_eager,
    "pyro-svi": pyro_svi,
    "pyro-jit": pyro_jit,
    "pyro-jit-fixed": pyro_jit_fixed,
}


def time_variant(fn, x, batch, epochs, elbo):
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed fit (>= 2)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--out", default=str(RESULTS / "train_throughput"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    # MNIST-shaped binary data with structure (a random low-rank logit field), resident in memory.
    logits = torch.randn(args.n, 10) @ torch.randn(10, D) - 2.0
    x = torch.bernoulli(torch.sigmoid(logits))
    rows = []
    for elbo in ("trace", "meanfield"):
        for batch in args.batches:
            samples: dict[str, list[tuple[float, float]]] = {v: [] for v in args.variants}
            for _ in range(args.repeats):  # interleaved repeats
                for v in args.variants:
                    samples[v].append(time_variant(VARIANTS[v], x, batch, args.epochs, elbo))
            floor = statistics.median(s[0] for s in samples["torch"])
            floor_whole = statistics.median(s[1] for s in samples["torch"])
            for v in args.variants:
                epoch = statistics.median(s[0] for s in samples[v])
                whole = statistics.median(s[1] for s in samples[v])
                rows.append({
                    "elbo": elbo, "batch": batch, "variant": v,
                    "epoch_s": epoch, "ratio": epoch / floor,
                    "whole_call_per_epoch_s": whole, "whole_ratio": whole / floor_whole,
                })
                print(f"{elbo:9s} b={batch:5d} {v:9s} epoch {epoch * 1e3:8.1f} ms  ratio {epoch / floor:5.3f}  (whole call {whole / floor_whole:5.3f})", flush=True)
    header = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__,
        "bayesvae": bv.__version__, "n": args.n, "repeats": args.repeats, "epochs_per_fit": args.epochs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    lines = [
        "# Training throughput: epoch time relative to a hand-written PyTorch loop",
        "",
        ", ".join(f"{k}: {v}" for k, v in header.items()),
        "",
        "Medians of interleaved repeats. `ratio`: steady-state epoch time / the PyTorch loop's;",
        "`whole-call ratio`: the whole `fit` call per epoch, including its once-per-fit data validation.",
        "",
        "| ELBO | batch | variant | epoch (ms) | ratio | whole-call ratio |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['elbo']} | {r['batch']} | {r['variant']} | {r['epoch_s'] * 1e3:.1f} | {r['ratio']:.3f} | {r['whole_ratio']:.3f} |"
        for r in rows
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
