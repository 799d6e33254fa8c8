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

Variants run interleaved in one process, >= 7 repeats at 1 and 2 torch threads; the table reports
the minimum and the median with the spread, the ratio to the floor judged on the minima (target <= 1.2) and the peak memory of each call above the process's resident size
before it (CPU: resident set size sampled every 2 ms from /proc; CUDA: the allocator's peak).
The two estimates are checked to agree (their per-point difference is Monte Carlo noise).

Usage: ``python benchmarks/evaluation_throughput.py [--num-samples 1000] [--points 1000]
[--repeats 7] [--threads 1 2] [--device cpu]``; ``--quick`` is a smoke test, not a
measurement. Run it alone on the machine. Writes ``benchmarks/results/evaluation_throughput.{md,json}``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import Variant, interleaved, machine_info, markdown_table, ratio_rows, write_results

import bayesvae as bv
from bayesvae.evaluation import log_marginal_likelihood
from bayesvae.scoring import default_chunk_size

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


VARIANTS: list[Variant] = [
    Variant("torch", torch_iwae, "hand-written PyTorch estimator (the floor)"),
    Variant("bayesvae", bayesvae_iwae, "bayesvae.evaluation.log_marginal_likelihood, whole call"),
]
"""The rows. To time your own estimator, append ``Variant("mine", fn, "what it is")`` where
``fn(model, guide, x, num_samples, chunk_size, seed)`` returns per-point log p(x) estimates."""


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
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats (>= 7 for a measurement)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to run each variant at")
    parser.add_argument("--chunk-size", type=int, default=None, help="(sample, point) pairs per block")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke test: K=50, N=50, 3 repeats, 1 thread; not a measurement")
    parser.add_argument("--out", default=str(RESULTS / "evaluation_throughput"))
    args = parser.parse_args(argv)
    if args.quick:
        args.num_samples, args.points, args.repeats, args.threads = 50, 50, 3, [1]
    args.chunk_size = args.chunk_size or default_chunk_size(D)
    device = torch.device(args.device)
    torch.manual_seed(0)
    # MNIST-shaped binary data with structure (a random low-rank logit field)
    logits = torch.randn(args.points, 10) @ torch.randn(10, D) - 2.0
    x = torch.bernoulli(torch.sigmoid(logits)).to(device)
    model, guide = build(device)
    for v in VARIANTS:  # warm-up (allocator, lazy imports), not timed
        run(v.fn, model, guide, x[:2], argparse.Namespace(**{**vars(args), "num_samples": 2}), device)
    header = machine_info(device)
    header.update(
        num_samples=args.num_samples, points=args.points, chunk_size=args.chunk_size,
        repeats=args.repeats, threads=args.threads, quick=args.quick,
    )
    estimates: dict[str, torch.Tensor] = {}

    def measure(v: Variant):
        seconds, peak, values = run(v.fn, model, guide, x, args, device)
        estimates[v.name] = values.double().cpu()
        return seconds, peak

    result = interleaved(VARIANTS, measure, repeats=args.repeats, threads=args.threads)
    header["load_before"], header["load_after"] = result.load_before, result.load_after
    diff = estimates["bayesvae"] - estimates["torch"]
    agree_se = float(diff.std()) / math.sqrt(diff.numel()) if diff.numel() > 1 else math.nan
    pairs = args.num_samples * args.points
    names = [v.name for v in VARIANTS]
    rows = ratio_rows(result, names, "torch", args.threads, key=lambda s: s[0])
    for r in rows:
        r["pairs_per_s_max"] = pairs / r["min"]
        r["peak_mib"] = statistics.median(s[1] for s in result.samples[(r["variant"], r["threads"])]) / 2**20
        r["log_px"] = float(estimates[r["variant"]].mean())
        r["spread_pct"] = 100 * r["spread"]
        print(
            f"t={r['threads']} {r['variant']:9s} min {r['min']:8.3f} s  median {r['median']:8.3f} s  spread {r['spread_pct']:5.1f}%  ratio(min) {r['ratio_min']:5.3f}"
            f"  ratio(median) {r['ratio_median']:5.3f}  {r['pairs_per_s_max']:12.0f} pairs/s  peak {r['peak_mib']:8.1f} MiB  log p(x) {r['log_px']:.3f}",
            flush=True,
        )
    print(f"bayesvae - torch: {float(diff.mean()):.4f} +- {agree_se:.4f} nats/point (Monte Carlo noise)")
    lines = [
        "# Evaluation throughput: importance-weighted log p(x), bayesvae vs pure PyTorch",
        "",
        ", ".join(f"{k}: {v}" for k, v in header.items()),
        "",
        f"784-400-20 Bernoulli VAE, K = {args.num_samples} samples x N = {args.points} points, blocks of",
        f"{args.chunk_size} (sample, point) pairs. {args.repeats} interleaved repeats (variant order rotated) at each of",
        f"{args.threads} torch threads: `min`, `median`, `spread` = max/min - 1 of the call's wall time. **Ratios are",
        "judged on the minima** (target <= 1.2); `ratio (median)` beside. Pairs/s from the minimum. Peak memory",
        "(median over repeats) is above the process's level before the call (CPU: sampled RSS; CUDA: allocator peak).",
        f"Load average (1, 5, 15 min) before: {result.load_before}, after: {result.load_after}.",
        "",
    ]
    if args.quick or args.repeats < 7:
        lines += ["**Smoke run (fewer than 7 repeats or --quick): not a measurement.**", ""]
    lines += markdown_table(
        rows,
        [
            ("threads", "threads", "d"), ("variant", "variant", ""), ("min (s)", "min", ".3f"), ("median (s)", "median", ".3f"),
            ("spread (%)", "spread_pct", ".1f"), ("ratio (min)", "ratio_min", ".3f"), ("ratio (median)", "ratio_median", ".3f"),
            ("pairs / s", "pairs_per_s_max", ".0f"), ("peak memory (MiB)", "peak_mib", ".1f"), ("mean log p(x)", "log_px", ".3f"),
        ],
    )
    lines += ["", f"Per-point difference bayesvae - torch (last repeat): {float(diff.mean()):.4f} +- {agree_se:.4f} nats (Monte Carlo noise)."]
    payload = {
        "header": header, "variants": {v.name: v.description for v in VARIANTS}, "rows": rows,
        "load_per_repeat": result.load_per_repeat, "difference_mean": float(diff.mean()), "difference_se": agree_se,
    }
    md = write_results(args.out, payload, lines)
    print(f"wrote {md} and .json")


if __name__ == "__main__":
    main()
