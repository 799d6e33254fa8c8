r"""Frey Face: a Gaussian-likelihood VAE and its held-out log-likelihood in nats per image.

Data: Brendan Frey's 1965 video frames of 28 x 20 = 560 gray pixels (``shared/data/frey_face``,
read with ``bayesvae.datasets.read_frey_face``). Consecutive frames are nearly identical, so
the default split is contiguous: the first ``--train-frames`` (1500) frames train, the
remaining 465 are held out (a random split, ``--split random``, puts near-duplicates of
training frames in the test set and overstates held-out performance).

Model: p(z) = N(0, I_L), a decoder MLP L-200-(560 or 1120) (tanh, as in Kingma & Welling [1]_
for Frey Face) and a Gaussian likelihood on the *modelled* pixel values y,

.. math::

    p(y \mid z) = \prod_{d=1}^{560} \mathcal N\big(y_d \mid \mu_d(z), \sigma_d^2\big),

with ``--variance learned``: one learned :math:`\sigma_d` per pixel (``Gaussian(data_dim=560)``),
or ``--variance decoder``: :math:`\sigma_d(z)` predicted by the decoder
(``Gaussian(heteroscedastic=True)``); :math:`\sigma = \mathrm{softplus}(\cdot) + \sigma_{min}`
(``--min-scale``). The guide is an amortized diagonal Gaussian 560-200-(L, L), trained with
``bayesvae.fit`` (``meanfield``: analytic KL).

Held-out log-likelihood: :math:`\log \hat p(y_n) = \log \frac1K \sum_k p(y_n, z_k) / q(z_k \mid y_n)`
with ``--eval-samples`` K (``bayesvae.evaluation.log_marginal_likelihood``), averaged over the
held-out frames, ± its standard error over frames.

**Pixel scaling and the change of variables.** The raw pixels are integers x in {0..255}.
With ``--scale unit`` the model sees y = x / 255 in [0, 1]; with ``--scale raw`` it sees
y = x. A density on y is a density on x after the Jacobian of the map: for y = x / c,

.. math::

    \log p_X(x) = \log p_Y(y) + \log\left|\frac{dy}{dx}\right|
                = \log p_Y(y) - 560 \log c \quad\text{nats per image},

so for c = 255 the term is -560 log 255 = -3103.11 nats per image. Both numbers are written out
(``log p(y)`` in the modelled units and ``log p(x)`` on the 0..255 pixel scale); only the
latter compares across scalings. Both are *densities* of a continuous model evaluated at
discrete pixel values, not probabilities of the discrete pixels: a Gaussian can put
arbitrarily high density on a quantized value as sigma shrinks, which ``--min-scale`` bounds
(the default 1e-3 in unit scale is about the standard deviation of the quantization noise,
(1/255)/sqrt(12) = 1.13e-3; it is multiplied by 255 for ``--scale raw``). Uniform
dequantization (x + u, u ~ U(0, 1)), which would make the number a bound on the discrete
log-probability, is not done here.

No paper gives a held-out Frey Face log-likelihood for this architecture in a table
(Kingma & Welling [1]_ plot lower bounds in their Figure 2), so there is no published number
to set beside the result.

Results are merged into ``benchmarks/results/frey_face.{json,md}`` (one row per protocol).

Examples
--------
``python benchmarks/frey_face.py`` (defaults: L = 10, learned per-pixel variance, 200 epochs);
``python benchmarks/frey_face.py --variance decoder --epochs 5 --eval-samples 100 --out /tmp/frey``.

References
----------
.. [1] D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014,
   arXiv:1312.6114 (section 5, appendix C.2: Gaussian MLP decoder).
.. [2] L. Theis, A. van den Oord and M. Bethge, "A note on the evaluation of generative
   models", ICLR 2016, arXiv:1511.01844 (continuous densities on discrete data).
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from _results import merge_runs
from _timing import load_average, machine_info

import bayesvae as bv
from bayesvae.evaluation import log_marginal_likelihood

RESULTS = Path(__file__).parent / "results"
PIXELS = 560
SCALES = {"unit": 255.0, "raw": 1.0}  # y = x / c


class BenchmarkError(RuntimeError):
    """A run this installation cannot do, with what to do about it."""


@dataclass(frozen=True)
class Protocol:
    scale: str
    variance: str
    latent_dim: int
    hidden: int
    epochs: int
    batch_size: int
    lr: float
    min_scale: float
    split: str
    train_frames: int
    eval_samples: int
    seed: int

    @property
    def label(self) -> str:
        return (
            f"{self.variance} variance, {self.scale} scale, L={self.latent_dim}, h={self.hidden}, {self.epochs} ep, b={self.batch_size}, lr {self.lr:g},"
            f" min scale {self.min_scale:g}, {self.split} split {self.train_frames} train, K={self.eval_samples}, seed {self.seed}"
        )

    @property
    def log_jacobian(self) -> float:
        """log|dy/dx| per image for y = x / c: -560 log c."""
        return -PIXELS * math.log(SCALES[self.scale])


def find_data(arg: str | None) -> Path:
    root = Path(__file__).resolve().parents[1]
    candidates = [Path(arg)] if arg else []
    if os.environ.get("BAYESVAE_DATA"):
        candidates.append(Path(os.environ["BAYESVAE_DATA"]))
    candidates += [root / "shared" / "data", root.parent / "shared" / "data"]
    for c in candidates:
        f = c / "frey_face" / "frey_rawface.mat"
        if f.is_file():
            return f
    raise BenchmarkError(f"frey_face/frey_rawface.mat not found under {[str(c) for c in candidates]}; pass --data-dir")


def split(x: torch.Tensor, proto: Protocol) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]
    if not 0 < proto.train_frames < n:
        raise BenchmarkError(f"--train-frames must be between 1 and {n - 1}, got {proto.train_frames}")
    if proto.split == "contiguous":
        return x[: proto.train_frames], x[proto.train_frames :]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(proto.seed))
    return x[perm[: proto.train_frames]], x[perm[proto.train_frames :]]


def build(proto: Protocol, mean_image: torch.Tensor) -> tuple[bv.VAE, bv.AmortizedGuide]:
    """The VAE and guide; the decoder's output bias starts at the mean training image.

    With a decoder-predicted variance the scale half of the output bias starts where
    sigma = ``init_scale`` (a tenth of the pixel range), so that neither scaling starts
    from a mean of 0 and sigma of 0.69 (PyTorch's zero-ish init), which on the 0..255 scale
    would take thousands of steps to undo.
    """
    min_scale = proto.min_scale * (255.0 if proto.scale == "raw" else 1.0)
    init_scale = max(0.1 * (255.0 if proto.scale == "raw" else 1.0), 2 * min_scale)
    if proto.variance == "learned":
        likelihood = bv.Gaussian(data_dim=PIXELS, min_scale=min_scale, init_scale=init_scale)
    else:
        likelihood = bv.Gaussian(heteroscedastic=True, min_scale=min_scale, init_scale=init_scale)
    decoder = bv.MLP(proto.latent_dim, likelihood.num_outputs(PIXELS), hidden=(proto.hidden,), activation="tanh")
    model = bv.VAE(prior=bv.GaussianPrior(proto.latent_dim), likelihood=likelihood, decoder=decoder, data_dim=PIXELS)
    guide = bv.AmortizedGuide(model, hidden=(proto.hidden,), activation="tanh")
    last = decoder.net[-1]
    with torch.no_grad():
        last.bias[:PIXELS].copy_(mean_image)
        if proto.variance == "decoder":
            last.bias[PIXELS:].fill_(math.log(math.expm1(init_scale - min_scale)))  # softplus^-1
    return model, guide


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="unit", help="modelled pixel values: unit = x/255, raw = x in 0..255")
    p.add_argument("--variance", choices=["learned", "decoder"], default="learned", help="per-pixel learned sigma_d, or sigma_d(z) from the decoder")
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-scale", type=float, default=1e-3, help="smallest sigma, in unit-scale pixels (x 255 for --scale raw)")
    p.add_argument("--split", choices=["contiguous", "random"], default="contiguous")
    p.add_argument("--train-frames", type=int, default=1500)
    p.add_argument("--eval-samples", type=int, default=1000, help="K for the held-out log p(y)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(RESULTS / "frey_face"))
    args = p.parse_args(argv)
    for name in ("latent_dim", "hidden", "epochs", "batch_size", "eval_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not (args.lr > 0 and args.min_scale > 0):
        p.error("--lr and --min-scale must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    proto = Protocol(
        scale=args.scale, variance=args.variance, latent_dim=args.latent_dim, hidden=args.hidden, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, min_scale=args.min_scale, split=args.split, train_frames=args.train_frames,
        eval_samples=args.eval_samples, seed=args.seed,
    )
    device = torch.device(args.device)
    header = machine_info(device)
    header["load_before"] = load_average()
    print(", ".join(f"{k}: {v}" for k, v in header.items()), flush=True)
    print(f"protocol: {proto.label}", flush=True)
    ds = bv.datasets.read_frey_face(find_data(args.data_dir))
    x = torch.from_numpy(ds.x) * (255.0 / SCALES[proto.scale])  # the reader gives x / 255
    train, test = split(x, proto)
    print(f"data: {ds.description} This run models y = x / {SCALES[proto.scale]:g} (x the raw 0..255 pixels); train {tuple(train.shape)}, held out {tuple(test.shape)}", flush=True)
    torch.manual_seed(proto.seed)
    model, guide = build(proto, train.mean(0))
    t0 = time.perf_counter()
    fit = bv.fit(
        model, guide, train, elbo="meanfield", epochs=proto.epochs, batch_size=proto.batch_size, lr=proto.lr,
        seed=proto.seed, device=str(device), validation=test,
        **({"progress": False} if "progress" in inspect.signature(bv.fit).parameters else {}),
    )
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    held = log_marginal_likelihood(fit, test, num_samples=proto.eval_samples, seed=proto.seed + 1)
    # the same estimate on as many training frames, to show the generalization gap
    rows = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(proto.seed + 2))[: test.shape[0]]
    seen = log_marginal_likelihood(fit, train[rows], num_samples=proto.eval_samples, seed=proto.seed + 1)
    eval_s = time.perf_counter() - t0
    jac = proto.log_jacobian
    sigma = model.likelihood.feature_scale()
    result = {
        "heldout_log_py": held.mean,
        "heldout_se": held.se,
        "heldout_elbo_y": float(held.elbo.double().mean()),
        "heldout_log_px_0_255": held.mean + jac,
        "train_log_py": seen.mean,
        "train_se": seen.se,
        "log_jacobian_per_image": jac,
        "final_train_elbo_y": float(fit.history["elbo"].iloc[-1]),
        "final_val_elbo_y": float(fit.history["val_elbo"].iloc[-1]) if "val_elbo" in fit.history else None,
        "median_sigma": None if sigma is None else float(sigma.median()),
        "train_seconds": train_s,
        "eval_seconds": eval_s,
    }
    header["load_after"] = load_average()
    c = SCALES[proto.scale]
    print(
        f"held-out log p(y) {held.mean:.2f} +- {held.se:.2f} nats/image (ELBO {result['heldout_elbo_y']:.2f}); training frames {seen.mean:.2f} +- {seen.se:.2f}",
        flush=True,
    )
    print(
        f"on the 0..255 pixel scale: log p(x) = log p(y) + log|dy/dx| = {held.mean:.2f} - 560 log {c:g} ({jac:.2f}) = {held.mean + jac:.2f} nats/image",
        flush=True,
    )
    if sigma is not None:
        print(f"learned per-pixel sigma: median {float(sigma.median()):.4g} (modelled units)", flush=True)
    print(f"train {train_s:.1f} s, evaluation {eval_s:.1f} s", flush=True)
    run = {
        "key": proto.label,
        "protocol": asdict(proto),
        "header": header,
        "data": ds.description,
        "result": result,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    md = merge_runs(Path(args.out), run, render)
    print(f"wrote {md} and .json")
    return 0


def render(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "# Frey Face: held-out log-likelihood of a Gaussian-likelihood VAE (nats per image)",
        "",
        "1965 frames of 28 x 20 = 560 pixels; raw pixels x in 0..255, modelled as y = x / c (c = 255 for `unit`, 1 for `raw`).",
        "`log p(y)`: importance-weighted estimate (K samples) in the modelled units, ± SE over held-out frames.",
        "`log p(x)`: the same density on the 0..255 scale, log p(x) = log p(y) + log|dy/dx| = log p(y) - 560 log c",
        "(-560 log 255 = -3103.11 nats per image for `unit`). Densities of a continuous model at discrete pixel values",
        "(no dequantization); `min scale` bounds sigma. Contiguous split: the last frames of the video are held out.",
        "Generated by `benchmarks/frey_face.py`; see its docstring for the estimators.",
        "",
        "| protocol | held-out log p(y) ± SE | log\\|dy/dx\\| | held-out log p(x), 0..255 | held-out ELBO (y) | training-frame log p(y) | median σ | train (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        r = run["result"]
        sigma = "" if r["median_sigma"] is None else f"{r['median_sigma']:.4g}"
        lines.append(
            f"| {run['key']} | {r['heldout_log_py']:.2f} ± {r['heldout_se']:.2f} | {r['log_jacobian_per_image']:.2f} | {r['heldout_log_px_0_255']:.2f}"
            f" | {r['heldout_elbo_y']:.2f} | {r['train_log_py']:.2f} ± {r['train_se']:.2f} | {sigma} | {r['train_seconds']:.0f} |"
        )
    lines += ["", "## Runs", ""]
    for run in runs:
        h = run["header"]
        lines += [
            f"- {run['key']}: `{run['command']}`, finished {run['finished']}; {h.get('cpu')}, {h.get('cores')} cores, {h.get('torch_threads')} torch threads,"
            f" device {h.get('device')}; python {h.get('python')}, torch {h.get('torch')}, pyro {h.get('pyro')}, bayesvae {h.get('bayesvae')};"
            f" load average before {h.get('load_before')}, after {h.get('load_after')}"
            + ("; **smoke run**" if run["protocol"]["epochs"] < 20 else ""),
        ]
    lines += [
        "",
        "No published held-out number exists for this setting to compare against (Kingma & Welling 2014 show Frey Face",
        "lower bounds only in figures).",
    ]
    return lines


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
