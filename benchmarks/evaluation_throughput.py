"""Evaluation throughput: bayesvae's log p(x) estimate against a pure-PyTorch one of the same estimator.

The classic MLP VAE (784-400-20, ReLU, Bernoulli likelihood, standard normal prior) on
synthetic MNIST-shaped binary data; both variants compute the per-point importance-weighted
estimate :math:`\\log \\frac1K \\sum_k p(x_n, z_k) / q(z_k \\mid x_n)` (Burda et al. 2016) with
the same network weights, the same blocks of (sample, point) pairs and ``torch.no_grad``:

* ``torch``: the floor, a hand-written loop -- encoder once per block of points,
  ``z = loc + scale * eps`` for all samples at once, the fused ``binary_cross_entropy_with_logits``,
  analytic log-densities, a running ``logsumexp``.
* ``bayesvae``: ``bayesvae.evaluation.log_marginal_likelihood((model, guide), x, ...)``, which
  reads every log-density from Pyro traces of the model and guide (a particle plate over the
  samples), whole call (data validation included).

Variants run interleaved in one process, repeated; the table reports medians, the ratio to
the floor (target <= 1.2) and the peak memory of each call above the process's resident size
before it (CPU: resident set size sampled every 2 ms from /proc; CUDA: the allocator's peak).
The two estimates are checked to agree (their per-point difference is Monte Carlo noise).

Usage: ``python benchmarks/evaluation_throughput.py [--num-samples 1000] [--points 1000]
[--repeats 5] [--device cpu]``. Writes ``benchmarks/results/evaluation_throughput.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F

import bayesvae as bv
from bayesvae.evaluation import log_marginal_likelihood
from bayesvae.evaluation._traces import default_chunk_size

D, H, L = 784, 400, 20
RESULTS = Path(__file__).parent / "results"
LOG_2PI = math.log(2 * math.pi)


def build(device):
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(L), likelihood=bv.Bernoulli(), decoder=bv.MLP(L, D, hidden=(H,)))
    guide = bv.AmortizedGuide(model, hidden=(H,))
    return model.to(device), guide.to(device)


@torch.no_grad()
def torch_iwae(model, guide, x, num_samples, chunk_size, seed):
    """The same estimator by hand, on the same weights (read from the bayesvae modules)."""
    enc1, enc2 = guide.trunk[0].net[0], guide.heads["z"].linear
    dec1, dec2 = model.decoder.net[0], model.decoder.net[2]
    n = x.shape[0]
    s_block = min(num_samples, chunk_size)
    n_block = min(n, max(1, chunk_size // s_block))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    out = x.new_empty(n)
    for start in range(0, n, n_block):
        xb = x[start : start + n_block]
        loc, raw = enc2(F.relu(enc1(xb))).chunk(2, -1)
        scale = F.softplus(raw) + 1e-5
        log_scale = scale.log().sum(-1)
        lse = x.new_full((xb.shape[0],), -math.inf)
        for s0 in range(0, num_samples, s_block):
            s = min(s_block, num_samples - s0)
            eps = torch.randn((s, *loc.shape), generator=gen, device=x.device, dtype=x.dtype)
            z = loc + scale * eps
            logits = dec2(F.relu(dec1(z)))
            log_lik = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
            log_prior = -0.5 * (z.pow(2).sum(-1) + L * LOG_2PI)
            log_q = -0.5 * (eps.pow(2).sum(-1) + L * LOG_2PI) - log_scale
            lse = torch.logaddexp(lse, torch.logsumexp(log_lik + log_prior - log_q, 0))
        out[start : start + xb.shape[0]] = lse - math.log(num_samples)
    return out


def bayesvae_iwae(model, guide, x, num_samples, chunk_size, seed):
    return log_marginal_likelihood((model, guide), x, num_samples=num_samples, chunk_size=chunk_size, seed=seed).per_point


VARIANTS = {"torch": torch_iwae, "bayesvae": bayesvae_iwae}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of a block above its starting level: CUDA allocator stats or sampled RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = math.nan

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        if not os.path.exists("/proc/self/statm"):
            return self
        self.base = self.top = _rss_bytes()
        self.stop = threading.Event()

        def sample():
            while not self.stop.is_set():
                self.top = max(self.top, _rss_bytes())
                time.sleep(0.002)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        elif hasattr(self, "thread"):
            self.stop.set()
            self.thread.join()
            self.peak = max(self.top, _rss_bytes()) - self.base
        return False


def run(fn, model, guide, x, args, device):
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        values = fn(model, guide, x, args.num_samples, args.chunk_size, args.seed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    return seconds, mem.peak, values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=1000, help="K, importance samples per point")
    parser.add_argument("--points", type=int, default=1000, help="N, data points")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=None, help="(sample, point) pairs per block")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "evaluation_throughput"))
    args = parser.parse_args(argv)
    args.chunk_size = args.chunk_size or default_chunk_size(D)
    device = torch.device(args.device)
    torch.manual_seed(0)
    # MNIST-shaped binary data with structure (a random low-rank logit field)
    logits = torch.randn(args.points, 10) @ torch.randn(10, D) - 2.0
    x = torch.bernoulli(torch.sigmoid(logits)).to(device)
    model, guide = build(device)
    for fn in VARIANTS.values():  # warm-up (allocator, lazy imports), not timed
        run(fn, model, guide, x[:2], argparse.Namespace(**{**vars(args), "num_samples": 2}), device)
    samples: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    estimates = {}
    for _ in range(args.repeats):  # interleaved repeats
        for name, fn in VARIANTS.items():
            seconds, peak, values = run(fn, model, guide, x, args, device)
            samples[name].append((seconds, peak))
            estimates[name] = values.double().cpu()
    diff = estimates["bayesvae"] - estimates["torch"]
    agree_se = float(diff.std()) / math.sqrt(diff.numel()) if diff.numel() > 1 else math.nan
    floor = statistics.median(s[0] for s in samples["torch"])
    pairs = args.num_samples * args.points
    rows = []
    for name in VARIANTS:
        seconds = statistics.median(s[0] for s in samples[name])
        peak = statistics.median(s[1] for s in samples[name])
        rows.append({
            "variant": name, "seconds": seconds, "ratio": seconds / floor,
            "pairs_per_s": pairs / seconds, "peak_mib": peak / 2**20,
            "log_px": float(estimates[name].mean()),
        })
        print(f"{name:9s} {seconds:8.3f} s  ratio {seconds / floor:5.3f}  {pairs / seconds:12.0f} pairs/s  peak {peak / 2**20:8.1f} MiB  log p(x) {rows[-1]['log_px']:.3f}", flush=True)
    print(f"bayesvae - torch: {float(diff.mean()):.4f} +- {agree_se:.4f} nats/point (Monte Carlo noise)")
    header = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__,
        "bayesvae": bv.__version__, "num_samples": args.num_samples, "points": args.points,
        "chunk_size": args.chunk_size, "repeats": args.repeats,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({
        "header": header, "rows": rows, "difference_mean": float(diff.mean()), "difference_se": agree_se,
    }, indent=2))
    lines = [
        "# Evaluation throughput: importance-weighted log p(x), bayesvae vs pure PyTorch",
        "",
        ", ".join(f"{k}: {v}" for k, v in header.items()),
        "",
        f"784-400-20 Bernoulli VAE, K = {args.num_samples} samples x N = {args.points} points, blocks of",
        f"{args.chunk_size} (sample, point) pairs. Medians of {args.repeats} interleaved repeats; `ratio` is",
        "the time over the pure-PyTorch loop's (target <= 1.2); peak memory is above the process's",
        "level before the call (CPU: sampled RSS; CUDA: allocator peak).",
        "",
        "| variant | seconds | ratio | pairs / s | peak memory (MiB) | mean log p(x) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['variant']} | {r['seconds']:.3f} | {r['ratio']:.3f} | {r['pairs_per_s']:.0f} | {r['peak_mib']:.1f} | {r['log_px']:.3f} |"
        for r in rows
    ]
    lines += ["", f"Per-point difference bayesvae - torch: {float(diff.mean()):.4f} +- {agree_se:.4f} nats (Monte Carlo noise)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
