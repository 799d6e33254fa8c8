r"""Binarized MNIST test log-likelihood: bayesvae against Burda et al. (2016) and a hand-written PyTorch VAE.

The one-stochastic-layer architecture of Burda, Grosse & Salakhutdinov [1]_ (section 5 and
appendix): an encoder 784-200-200-(50 means, 50 scales) and a decoder 50-200-200-784 with
tanh hidden units, a standard normal prior p(z) = N(0, I_50) and a Bernoulli likelihood
p(x | z) = prod_d Bernoulli(x_d | sigmoid(f_d(z))). Weights are Glorot-uniform [3]_
(U(-a, a), a = sqrt(6 / (fan_in + fan_out))), biases zero, except the decoder's output bias,
which starts at logit(clip(mean training image, 0.001, 0.999)) so that the initial model
already predicts the average pixel. Adam [4]_ with epsilon = 1e-4 (Burda's setting).

Data (read from ``shared/data``, see its README for provenance):

* ``--dataset static``: Larochelle's fixed binarization [2]_, 50 000 train / 10 000 valid /
  10 000 test rows. The test file is sorted by digit class, so a subset of test rows is
  always a random subset (``--test-rows``), never a prefix.
* ``--dataset dynamic``: the gray MNIST training images minus the last 400 (59 600 rows,
  intensities pixel/255), re-binarized x ~ Bernoulli(intensity) every time a row is drawn
  (``fit(..., dynamic_binarization=True)``); the test set binarized once, with a fixed seed
  (``--test-binarization-seed``).

Schedule (``--schedule burda``): stage i = 0..7 runs 3^i epochs at lr = 1e-3 * 10^(-i/7),
3 280 epochs in all, batch 20. With ``--epochs E < 3280`` the stages are shortened in
proportion: stage i ends at epoch round(E * (3^0 + ... + 3^i) / 3280) (at least one epoch per
stage while E >= 8). ``--schedule constant`` keeps ``--lr`` throughout. The schedule is a
callable epoch -> lr of the 0-based epoch index, passed to ``fit(lr=...)``.

Objectives (``--objective``): ``meanfield`` (the ELBO with the analytic Gaussian KL),
``trace`` (the ELBO, Monte Carlo KL), ``iwae`` with ``--k`` samples per point, the bound

.. math::

    \mathcal L_K(x) = \mathbb E_{z_{1:K} \sim q(z \mid x)}
        \log \frac1K \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k \mid x)} \le \log p(x)

(eq. 8 of [1]_; K = 1 is the ELBO). Every minibatch loss is the full-data loss
-(N/B) * sum_{n in batch} L(x_n), in both implementations.

Evaluation on the test rows:

* **log p̂(x)**: the importance-weighted estimate with ``--eval-samples`` K (5000 in [1]_),
  log p̂(x_n) = logsumexp_k log w_nk - log K, w_nk = p(x_n, z_nk) / q(z_nk | x_n),
  z_nk ~ q(z | x_n), in chunks of (sample, point) pairs; the mean over test rows ± its
  standard error std_n(log p̂(x_n)) / sqrt(N) (over points; the Monte Carlo error of each
  point's estimate is smaller and not included). The negative log-likelihood in Burda's
  tables is -mean log p̂(x). bayesvae: ``bayesvae.evaluation.log_marginal_likelihood``.
* **ELBO**: (1/K) sum_k log w_nk on the same draws, averaged over rows.
* **active units** (section 5.2 of [1]_): unit u is active if
  A_u = Cov_x(E_{q(z|x)}[z_u]) > 0.01, the population variance over ``--active-rows`` (500)
  random training rows (dynamic: binarized once with the test seed) of the encoder mean.
  bayesvae: ``bayesvae.evaluation.active_units``.

``--impl torch`` runs the same protocol in plain PyTorch in this file (its own network,
initialization, loop, minibatch order, IWAE estimator and active-unit count; only the data
loading is shared). ``--impl both`` alternates the two in one process: after every
bayesvae epoch (``fit``'s per-epoch callback) one epoch of the PyTorch implementation runs,
each with its own random streams (the PyTorch side draws from its own ``torch.Generator``s
and never touches the global RNG that ``fit`` uses), so both see the same machine noise.
Epoch times are wall clock between callbacks; the steady state excludes the first epoch
(data validation, tracing, allocator warm-up). ``--check-estimators`` (done by
``--acceptance``) first copies bayesvae's initial weights into the PyTorch network and scores
100 test rows with both estimators: their difference must be Monte Carlo noise, which checks
that the two implementations are the same model and the same estimator.

``--acceptance``: static MNIST, 150 epochs (``--epochs`` overrides), batch 100, constant
lr 1e-3, Adam eps 1e-4, ``meanfield``, K = 1000 on 1000 random test rows, seed 0, both
implementations alternated; passes when |log p̂ bayesvae - log p̂ torch| <= 0.5 nats and the
steady-state epoch time ratio bayesvae / torch <= 1.05 (judged on the minima over epochs;
medians and the median of per-epoch paired ratios are shown beside).

Results are merged into ``benchmarks/results/mnist_loglik.{json,md}`` (one row per protocol
and implementation; a rerun replaces its row) with the machine, versions, seeds, protocol,
and the published numbers with their source beside each row.

The PyTorch side mirrors two choices of the package that differ from [1]_'s code: the
encoder's scale is softplus(raw) + 1e-5 (the package's ``NormalHead``; Burda's encoder
outputs log sigma), and the loss is the full-data sum (Adam is invariant to the loss scale
except through epsilon, so epsilon = 1e-4 acts like 1e-4 / N on a per-point mean loss).

``--device cuda`` keeps data resident on the GPU (no DataLoader) and prints steps/s of each
implementation and their ratio (the PyTorch side is eager). The code is device-agnostic.

Examples
--------
``python benchmarks/mnist_loglik.py --acceptance`` (roughly 20-25 min on 2 quiet cores: about
4 s per epoch per implementation at batch 100, 150 epochs each, plus evaluation);
``python benchmarks/mnist_loglik.py --dataset dynamic --objective iwae --k 50 --schedule burda
--batch-size 20 --epochs 3280 --eval-samples 5000 --device cuda`` (the paper's protocol);
``python benchmarks/mnist_loglik.py --epochs 2 --train-rows 500 --test-rows 100 --eval-samples 50
--impl both --out /tmp/smoke`` (a smoke test).

References
----------
.. [1] Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016,
   arXiv:1509.00519 (Table 1; appendix for static MNIST).
.. [2] R. Salakhutdinov and I. Murray, "On the quantitative analysis of deep belief networks",
   ICML 2008, doi:10.1145/1390156.1390266; H. Larochelle and I. Murray, "The neural
   autoregressive distribution estimator", AISTATS 2011.
.. [3] X. Glorot and Y. Bengio, "Understanding the difficulty of training deep feedforward
   neural networks", AISTATS 2010.
.. [4] D. P. Kingma and J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
   arXiv:1412.6980.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _results import merge_runs
from _timing import load_average, machine_info, summarize
from torch import nn

import bayesvae as bv
from bayesvae.evaluation import active_units, log_marginal_likelihood

RESULTS = Path(__file__).parent / "results"
D, H, L = 784, 200, 50
LOG_2PI = math.log(2 * math.pi)
MIN_SCALE = 1e-5  # the package's NormalHead: scale = softplus(raw) + 1e-5
BURDA_STAGES = 8
BURDA_EPOCHS = sum(3**i for i in range(BURDA_STAGES))  # 3280

#: Published test negative log-likelihoods (nats), one stochastic layer, with their source.
PUBLISHED = {
    ("dynamic", "vae"): (86.76, "Burda et al. 2016, Table 1, VAE k=1, 1 stochastic layer"),
    ("dynamic", "iwae50"): (84.78, "Burda et al. 2016, Table 1, IWAE k=50, 1 stochastic layer"),
    ("static", "vae"): (88.71, "Burda et al. 2016, appendix (static binarization), VAE, 1 layer"),
    ("static", "iwae50"): (87.10, "Burda et al. 2016, appendix (static binarization), IWAE k=50, 1 layer"),
}


class BenchmarkError(RuntimeError):
    """A protocol this installation cannot run, with what to do about it."""


# --------------------------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """Everything that defines a run (written into the results file)."""

    dataset: str
    objective: str
    k: int
    epochs: int
    batch_size: int
    schedule: str
    lr: float
    adam_eps: float | None
    eval_samples: int
    eval_chunk: int
    test_rows: int | None
    train_rows: int | None
    active_rows: int
    seed: int
    torch_seed: int
    test_binarization_seed: int
    device: str
    threads: int

    @property
    def label(self) -> str:
        k = f" K={self.k}" if self.objective == "iwae" else ""
        rows = f", {self.train_rows} train rows" if self.train_rows else ""
        test = f"{self.test_rows} test rows" if self.test_rows else "all test rows"
        return (
            f"{self.dataset}, {self.objective}{k}, {self.epochs} ep, b={self.batch_size}, {self.schedule} lr {self.lr:g},"
            f" eps {self.adam_eps if self.adam_eps is not None else 'torch default'}, eval K={self.eval_samples} on {test}{rows},"
            f" seed {self.seed}" + (f" (torch side {self.torch_seed})" if self.torch_seed != self.seed else "") + f", {self.device}, {self.threads} threads"
        )

    def published(self) -> tuple[float, str] | None:
        if self.objective in ("meanfield", "trace"):
            return PUBLISHED.get((self.dataset, "vae"))
        if self.objective == "iwae" and self.k == 50:
            return PUBLISHED.get((self.dataset, "iwae50"))
        return None


class StagedSchedule:
    r"""Burda et al.'s learning-rate schedule as a callable ``epoch -> lr`` (0-based epochs).

    Stage :math:`i = 0, \dots, 7` lasts :math:`3^i` epochs at
    :math:`\mathrm{lr}_i = \mathrm{lr}_0 \cdot 10^{-i/7}` (3 280 epochs). For ``total_epochs``
    :math:`E \ne 3280` stage :math:`i` ends at epoch
    :math:`\mathrm{round}(E \sum_{j \le i} 3^j / 3280)`. The indices it is called with are
    recorded (``calls``) so the report can say which epoch convention ``fit`` used.
    """

    def __init__(self, total_epochs: int, base_lr: float = 1e-3) -> None:
        self.total_epochs = total_epochs
        self.base_lr = base_lr
        cum, self.ends = 0, []
        for i in range(BURDA_STAGES):
            cum += 3**i
            self.ends.append(max(round(total_epochs * cum / BURDA_EPOCHS), min(i + 1, total_epochs)))
        self.calls: list[int] = []

    def stage(self, epoch: int) -> int:
        for i, end in enumerate(self.ends):
            if epoch < end:
                return i
        return BURDA_STAGES - 1

    def __call__(self, epoch: int) -> float:
        self.calls.append(int(epoch))
        return self.base_lr * 10 ** (-self.stage(int(epoch)) / 7)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "StagedSchedule (benchmarks/mnist_loglik.py)", "total_epochs": self.total_epochs, "base_lr": self.base_lr, "stage_ends": self.ends}

    def describe(self) -> str:
        starts = [0, *self.ends[:-1]]
        return "; ".join(
            f"epochs {s}-{e - 1}: lr {self.base_lr * 10 ** (-i / 7):.3g}" for i, (s, e) in enumerate(zip(starts, self.ends)) if e > s
        )


def constant_schedule(lr: float) -> Callable[[int], float]:
    def schedule(epoch: int) -> float:
        return lr

    return schedule


# --------------------------------------------------------------------------------------------
# Data (shared by both implementations)
# --------------------------------------------------------------------------------------------


@dataclass
class Data:
    train: torch.Tensor  # (N, 784): binary (static) or intensities in [0, 1] (dynamic)
    test: torch.Tensor  # (M, 784) binary
    active: torch.Tensor  # (500, 784) binary training rows for the active-unit count
    dynamic: bool
    out_bias: torch.Tensor  # (784,) logit of the clipped mean training image
    description: str


def find_data_dir(arg: str | None) -> Path:
    """``--data-dir``, else ``$BAYESVAE_DATA``, else ``shared/data`` inside or beside the checkout."""
    root = Path(__file__).resolve().parents[1]
    candidates = [Path(arg)] if arg else []
    if os.environ.get("BAYESVAE_DATA"):
        candidates.append(Path(os.environ["BAYESVAE_DATA"]))
    candidates += [root / "shared" / "data", root.parent / "shared" / "data"]
    for c in candidates:
        if (c / "binarized_mnist").is_dir() and (c / "mnist").is_dir():
            return c
    raise BenchmarkError(
        f"no MNIST data found in {[str(c) for c in candidates]}; pass --data-dir pointing at the folder holding binarized_mnist/ and mnist/ (see shared/data/README.md)"
    )


def load_data(proto: Protocol, data_dir: Path, device: torch.device) -> Data:
    """Training, test and active-unit rows for the protocol, resident on ``device``."""
    gen = torch.Generator().manual_seed(proto.seed)
    if proto.dataset == "static":
        train = torch.from_numpy(bv.datasets.read_binarized_mnist(data_dir / "binarized_mnist" / "binarized_mnist_train.amat.gz").x)
        test = torch.from_numpy(bv.datasets.read_binarized_mnist(data_dir / "binarized_mnist" / "binarized_mnist_test.amat.gz").x)
        desc = "Larochelle's statically binarized MNIST: 50 000 train rows (valid unused), test 10 000"
    else:
        gray = bv.datasets.read_mnist_idx(data_dir / "mnist" / "train-images-idx3-ubyte.gz").x
        train = torch.from_numpy(gray[:-400].copy())  # 59 600 intensities, re-binarized every draw
        test = torch.from_numpy(
            bv.datasets.read_mnist_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", binarize=True, seed=proto.test_binarization_seed).x
        )
        desc = f"MNIST gray training images minus the last 400 (59 600, dynamically binarized); test 10 000 binarized once with seed {proto.test_binarization_seed}"
    if proto.train_rows is not None and proto.train_rows < train.shape[0]:
        train = train[torch.randperm(train.shape[0], generator=gen)[: proto.train_rows]].contiguous()
        desc += f"; a random {proto.train_rows} of the training rows"
    if proto.test_rows is not None and proto.test_rows < test.shape[0]:
        # the static test file is sorted by class: always a random subset, never a prefix
        test = test[torch.randperm(test.shape[0], generator=gen)[: proto.test_rows]].contiguous()
        desc += f"; a random {proto.test_rows} of the test rows (seed {proto.seed})"
    active = train[torch.randperm(train.shape[0], generator=gen)[: proto.active_rows]]
    if proto.dataset == "dynamic":
        active = torch.bernoulli(active, generator=torch.Generator().manual_seed(proto.test_binarization_seed))
    mean = train.double().mean(0).clamp(0.001, 0.999)
    out_bias = torch.log(mean / (1 - mean)).float()
    return Data(train.to(device), test.to(device), active.to(device), proto.dataset == "dynamic", out_bias.to(device), desc)


# --------------------------------------------------------------------------------------------
# bayesvae implementation
# --------------------------------------------------------------------------------------------


def glorot_zero(modules: list[nn.Module]) -> None:
    """Glorot-uniform weights and zero biases for every ``nn.Linear`` inside ``modules``."""
    for root in modules:
        for m in root.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def build_bayesvae(out_bias: torch.Tensor) -> tuple[bv.VAE, bv.AmortizedGuide]:
    """The Burda architecture from the package's parts, initialized after construction.

    The package's ``MLP`` takes ``activation="tanh"`` but has no initialization option, so
    Glorot-uniform weights, zero biases and the decoder's output bias are set here.
    """
    model = bv.VAE(
        prior=bv.GaussianPrior(L),
        likelihood=bv.Bernoulli(),
        decoder=bv.MLP(L, D, hidden=(H, H), activation="tanh"),
    )
    guide = bv.AmortizedGuide(model, hidden=(H, H), activation="tanh")
    glorot_zero([model, guide])
    last = model.decoder.net[-1]
    if not (isinstance(last, nn.Linear) and last.out_features == D):
        raise BenchmarkError(f"expected the decoder MLP to end in a Linear(…, {D}); got {last!r}")
    with torch.no_grad():
        last.bias.copy_(out_bias.to(last.bias))
    return model, guide


def fit_options(proto: Protocol, schedule: Callable[[int], float], cuda_graphs: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``bayesvae.fit`` beyond the basics; a clear error when it lacks one."""
    accepted = inspect.signature(bv.fit).parameters
    kw: dict[str, Any] = {"lr": proto.lr if proto.schedule == "constant" else schedule}
    if cuda_graphs:
        if "cuda_graphs" not in accepted:
            raise BenchmarkError("this bayesvae.fit has no cuda_graphs= option; update bayesvae or drop --cuda-graphs")
        kw["cuda_graphs"] = True
    if proto.adam_eps is not None:
        if "adam_eps" not in accepted:
            raise BenchmarkError(
                f"this bayesvae.fit has no adam_eps= option (Burda's Adam epsilon {proto.adam_eps:g}); update bayesvae, or pass --adam-eps default to run both implementations with torch's default epsilon 1e-8"
            )
        kw["adam_eps"] = proto.adam_eps
    if proto.dataset == "dynamic":
        if "dynamic_binarization" not in accepted:
            raise BenchmarkError(
                "this bayesvae.fit has no dynamic_binarization= option, which dynamic MNIST needs (rows re-drawn as Bernoulli(intensity) at every draw); update bayesvae or use --dataset static"
            )
        kw["dynamic_binarization"] = True
    if "progress" in accepted:
        kw["progress"] = False  # per-epoch lines come from this script
    return kw


@dataclass
class RunTimes:
    epoch_seconds: list[float]
    steps_per_epoch: int
    train_elbo: list[float]

    def steady(self) -> list[float]:
        return self.epoch_seconds[1:] if len(self.epoch_seconds) > 1 else self.epoch_seconds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bayesvae(proto: Protocol, data: Data, device: torch.device, schedule, between: Callable[[int], None] | None, log, cuda_graphs: bool = False):
    """``bayesvae.fit`` with per-epoch wall times; ``between(epoch)`` runs after each epoch (untimed)."""
    torch.manual_seed(proto.seed)
    model, guide = build_bayesvae(data.out_bias.cpu())
    times: list[float] = []
    elbos: list[float] = []
    mark = [0.0]

    def callback(record: dict[str, float]) -> None:
        sync(device)
        times.append(time.perf_counter() - mark[0])
        elbos.append(float(record["elbo"]))
        epoch = len(times)
        log(epoch, "bayesvae", elbos[-1], times[-1])
        if between is not None:
            between(epoch - 1)
        sync(device)
        mark[0] = time.perf_counter()

    kw = fit_options(proto, schedule, cuda_graphs)
    elbo = "iwae" if proto.objective == "iwae" else proto.objective
    mark[0] = time.perf_counter()
    try:
        result = bv.fit(
            model, guide, data.train, elbo=elbo, num_particles=proto.k if proto.objective == "iwae" else 1,
            epochs=proto.epochs, batch_size=proto.batch_size, device=str(device), seed=proto.seed, callback=callback, **kw,
        )
    except (TypeError, ValueError) as err:
        if "lr" in str(err) and callable(kw["lr"]):
            raise BenchmarkError(
                f"this bayesvae.fit does not take a callable lr= (epoch -> lr), which --schedule burda needs ({err}); update bayesvae or use --schedule constant"
            ) from err
        raise
    steps = math.ceil(data.train.shape[0] / proto.batch_size)
    return result, RunTimes(times, steps, elbos)


def evaluate_bayesvae(result, proto: Protocol, data: Data) -> dict[str, Any]:
    t0 = time.perf_counter()
    lml = log_marginal_likelihood(result, data.test, num_samples=proto.eval_samples, seed=proto.seed + 1, chunk_size=proto.eval_chunk)
    au = active_units(result, data.active, threshold=0.01, seed=proto.seed + 2)
    return {
        "log_px": lml.mean,
        "se": lml.se,
        "elbo": float(lml.elbo.double().mean()),
        "active_units": au.num_active,
        "eval_seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------------------------
# Pure PyTorch implementation (own network, loop, estimator)
# --------------------------------------------------------------------------------------------


class TorchVAE(nn.Module):
    """784-200-200-(50, 50) tanh encoder, 50-200-200-784 tanh decoder, written out by hand."""

    def __init__(self, out_bias: torch.Tensor) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, H), nn.Tanh(), nn.Linear(H, 2 * L))
        self.dec = nn.Sequential(nn.Linear(L, H), nn.Tanh(), nn.Linear(H, H), nn.Tanh(), nn.Linear(H, D))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                bound = math.sqrt(6.0 / (m.in_features + m.out_features))  # Glorot uniform
                with torch.no_grad():
                    m.weight.uniform_(-bound, bound)
                    m.bias.zero_()
        with torch.no_grad():
            self.dec[-1].bias.copy_(out_bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.enc(x).chunk(2, dim=-1)
        return loc, F.softplus(raw) + MIN_SCALE

    def log_weights(self, x: torch.Tensor, eps: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """log p(x, z) - log q(z | x) for z = loc + scale * eps; eps of shape (K, B, L) -> (K, B)."""
        z = loc + scale * eps
        logits = self.dec(z)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_prior = -0.5 * (z.pow(2).sum(-1) + L * LOG_2PI)
        log_q = -0.5 * (eps.pow(2).sum(-1) + L * LOG_2PI) - scale.log().sum(-1)
        return log_lik + log_prior - log_q


class TorchTrainer:
    """A hand-written training loop: its own minibatch order, noise and binarization streams."""

    def __init__(self, proto: Protocol, data: Data, device: torch.device, schedule: Callable[[int], float], *, adam: str = "fused") -> None:
        self.proto, self.data, self.device, self.schedule = proto, data, device, schedule
        self.adam = adam
        init = torch.Generator().manual_seed(proto.torch_seed)
        with torch.random.fork_rng(devices=[]):  # initialize from our own seed, not the global stream
            torch.set_rng_state(init.get_state())
            self.net = TorchVAE(data.out_bias.cpu()).to(device)
        eps = {} if proto.adam_eps is None else {"eps": proto.adam_eps}
        if adam == "fused":  # torch's fused kernel, the implementation bayesvae.fit uses where it exists
            try:
                self.opt = torch.optim.Adam(self.net.parameters(), lr=schedule(0), fused=True, **eps)
            except RuntimeError:
                self.adam = "default"
        if self.adam == "default":  # what a hand-written loop gets from torch.optim.Adam(params)
            self.opt = torch.optim.Adam(self.net.parameters(), lr=schedule(0), **eps)
        self.order = torch.Generator().manual_seed(proto.torch_seed)
        self.noise = torch.Generator(device=device).manual_seed(proto.torch_seed + 1)
        self.times: list[float] = []
        self.elbos: list[float] = []

    def loss(self, xb: torch.Tensor, n: int) -> torch.Tensor:
        """-(N / B) * sum over the batch of the objective's per-point bound."""
        proto = self.proto
        loc, scale = self.net.encode(xb)
        if proto.objective == "meanfield":
            eps = torch.randn(loc.shape, generator=self.noise, device=xb.device, dtype=xb.dtype)
            z = loc + scale * eps
            logits = self.net.dec(z)
            nll = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
            kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum() - scale.log().sum()
            bound_sum = -(nll + kl)
        else:
            k = proto.k if proto.objective == "iwae" else 1
            eps = torch.randn((k, *loc.shape), generator=self.noise, device=xb.device, dtype=xb.dtype)
            logw = self.net.log_weights(xb, eps, loc, scale)
            bound_sum = (torch.logsumexp(logw, 0) - math.log(k)).sum()
        return -bound_sum * (n / xb.shape[0])

    def epoch(self, e: int) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        x, n, b = self.data.train, self.data.train.shape[0], self.proto.batch_size
        lr = self.schedule(e)
        for group in self.opt.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        perm = torch.randperm(n, generator=self.order).to(self.device)
        steps = 0
        for start in range(0, n, b):
            xb = x[perm[start : start + b]]
            if self.data.dynamic:
                xb = torch.bernoulli(xb, generator=self.noise)
            loss = self.loss(xb, n)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach()
            steps += 1
        self.elbos.append(-float(total) / (steps * n))
        sync(self.device)
        self.times.append(time.perf_counter() - t0)

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Own IWAE estimator (chunked, running logsumexp) and own active-unit count."""
        t0 = time.perf_counter()
        log_px, elbo = torch_log_px(self.net, self.data.test, self.proto.eval_samples, self.proto.eval_chunk, self.proto.seed + 1)
        mu, _ = self.net.encode(self.data.active)
        variance = mu.double().var(0, unbiased=False)
        return {
            "log_px": float(log_px.mean()),
            "se": float(log_px.std() / math.sqrt(log_px.numel())) if log_px.numel() > 1 else math.nan,
            "elbo": float(elbo.mean()),
            "active_units": int((variance > 0.01).sum()),
            "eval_seconds": time.perf_counter() - t0,
        }


@torch.no_grad()
def torch_log_px(net: TorchVAE, x: torch.Tensor, num_samples: int, chunk: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: log p̂(x_n) = logsumexp_k log w_nk - log K, and the ELBO (1/K) sum_k log w_nk on the same draws.

    Blocks of at most ``chunk`` (sample, point) pairs with a running ``logaddexp``, so memory
    does not grow with K; draws from a ``torch.Generator`` seeded with ``seed``.
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    k = num_samples
    s_block = min(k, chunk)
    n_block = max(1, chunk // s_block)
    log_px, elbo = x.new_empty(x.shape[0], dtype=torch.float64), x.new_empty(x.shape[0], dtype=torch.float64)
    for start in range(0, x.shape[0], n_block):
        xb = x[start : start + n_block]
        loc, scale = net.encode(xb)
        lse = xb.new_full((xb.shape[0],), -math.inf)
        mean_logw = xb.new_zeros(xb.shape[0])
        for s0 in range(0, k, s_block):
            s = min(s_block, k - s0)
            eps = torch.randn((s, *loc.shape), generator=gen, device=xb.device, dtype=xb.dtype)
            logw = net.log_weights(xb, eps, loc, scale)
            lse = torch.logaddexp(lse, torch.logsumexp(logw, 0))
            mean_logw += logw.sum(0) / k
        log_px[start : start + xb.shape[0]] = (lse - math.log(k)).double()
        elbo[start : start + xb.shape[0]] = mean_logw.double()
    return log_px.cpu(), elbo.cpu()


def check_estimators(proto: Protocol, data: Data, device: torch.device, rows: int = 100, samples: int = 200) -> dict[str, float]:
    """Both implementations' estimators on the *same* weights: their log p̂(x) must agree.

    The bayesvae model and guide (as initialized for this protocol) are copied layer by layer
    into a ``TorchVAE``; both then score the same ``rows`` test rows with ``samples``
    importance samples each. With independent draws the per-row difference has mean 0, so
    ``|mean difference| / its SE`` above about 4 points at a mismatch in architecture or
    estimator rather than Monte Carlo noise.
    """
    torch.manual_seed(proto.seed)
    model, guide = build_bayesvae(data.out_bias.cpu())
    net = TorchVAE(data.out_bias.cpu())
    pairs = [
        (net.enc[0], guide.trunk[0].net[0]), (net.enc[2], guide.trunk[0].net[2]), (net.enc[4], guide.heads["z"].linear),
        (net.dec[0], model.decoder.net[0]), (net.dec[2], model.decoder.net[2]), (net.dec[4], model.decoder.net[4]),
    ]
    with torch.no_grad():
        for mine, theirs in pairs:
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
    model, guide, net = model.to(device), guide.to(device), net.to(device)
    # a random subset: the full static test file is sorted by class (a prefix would be all 0s)
    pick = torch.randperm(data.test.shape[0], generator=torch.Generator().manual_seed(proto.seed + 3))[:rows]
    x = data.test[pick.to(data.test.device)]
    per_torch, _ = torch_log_px(net, x, samples, proto.eval_chunk, proto.seed + 3)
    per_bv = log_marginal_likelihood((model, guide), x, num_samples=samples, seed=proto.seed + 3, chunk_size=proto.eval_chunk).per_point.double().cpu()
    diff = per_bv - per_torch
    return {
        "rows": rows,
        "samples": samples,
        "bayesvae": float(per_bv.mean()),
        "torch": float(per_torch.mean()),
        "difference": float(diff.mean()),
        "difference_se": float(diff.std() / math.sqrt(diff.numel())),
    }


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def timing_summary(times: RunTimes | None) -> dict[str, Any] | None:
    if times is None or not times.epoch_seconds:
        return None
    s = summarize(times.steady())
    return {
        "first_epoch_s": times.epoch_seconds[0],
        "steady_min_s": s.min,
        "steady_median_s": s.median,
        "steady_spread": s.spread,
        "steps_per_epoch": times.steps_per_epoch,
        "steps_per_s_median": times.steps_per_epoch / s.median,
        "total_train_s": sum(times.epoch_seconds),
        "epoch_seconds": times.epoch_seconds,
        "final_train_elbo": times.train_elbo[-1],
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["static", "dynamic"], default="static")
    p.add_argument("--objective", choices=["meanfield", "trace", "iwae"], default="meanfield")
    p.add_argument("--k", type=int, default=50, help="importance samples per point for --objective iwae (Burda: 5, 50)")
    p.add_argument("--schedule", choices=["burda", "constant"], default="burda")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default: {BURDA_EPOCHS} for burda, 150 with --acceptance); burda stages shrink in proportion")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch rows (default 20, Burda; 100 with --acceptance)")
    p.add_argument("--lr", type=float, default=1e-3, help="constant lr, or the first stage's lr of the burda schedule")
    p.add_argument("--adam-eps", default="1e-4", help="Adam epsilon (Burda: 1e-4); 'default' leaves torch's 1e-8 in both implementations")
    p.add_argument("--eval-samples", type=int, default=None, help="K for the test log p(x) (default 5000; 1000 with --acceptance)")
    p.add_argument("--eval-chunk", type=int, default=10000, help="(sample, point) pairs per evaluation block (both implementations)")
    p.add_argument("--test-rows", type=int, default=None, help="score a random subset of test rows (default all; 1000 with --acceptance)")
    p.add_argument("--train-rows", type=int, default=None, help="train on a random subset (smoke tests only)")
    p.add_argument("--active-rows", type=int, default=500, help="training rows for the active-unit count (Burda: 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-seed", type=int, default=None, help="training seed of the PyTorch side (default: --seed); rerun with another to see seed-to-seed spread")
    p.add_argument("--test-binarization-seed", type=int, default=0, help="dynamic MNIST: seed of the one binarization of the test set")
    p.add_argument("--impl", choices=["bayesvae", "torch", "both"], default="both")
    p.add_argument(
        "--torch-adam", choices=["fused", "default", "both"], default="both",
        help="the PyTorch side's Adam: torch's fused kernel (what bayesvae.fit uses where torch has it; the acceptance ratio is"
        " judged against it), torch.optim.Adam's default implementation, or both (each its own alternated run)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--cuda-graphs", action="store_true", help="bayesvae side: fit(..., cuda_graphs=True), each full-batch step captured as one CUDA graph (with --device cuda)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--acceptance", action="store_true", help="the acceptance protocol: static, 150 epochs, b=100, constant lr 1e-3, K=1000 on 1000 test rows, seed 0, both implementations alternated")
    p.add_argument("--check-estimators", action="store_true", help="first score 100 test rows with both estimators on the same (initial) weights; they must agree (done by --acceptance)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--log-every", type=int, default=10, help="print training progress every this many epochs")
    p.add_argument("--out", default=str(RESULTS / "mnist_loglik"), help="results file stem (.json and .md; rows are merged)")
    args = p.parse_args(argv)
    if args.acceptance:
        args.dataset, args.schedule, args.impl, args.lr = "static", "constant", "both", 1e-3
        args.epochs = args.epochs or 150
        args.batch_size = args.batch_size or 100
        args.eval_samples = args.eval_samples or 1000
        args.test_rows = args.test_rows or 1000
    args.epochs = args.epochs or BURDA_EPOCHS
    args.batch_size = args.batch_size or 20
    args.eval_samples = args.eval_samples or 5000
    for name in ("epochs", "batch_size", "eval_samples", "eval_chunk", "k", "active_rows"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.adam_eps == "default":
        args.adam_eps = None
    else:
        try:
            args.adam_eps = float(args.adam_eps)
        except ValueError:
            p.error(f"--adam-eps must be a positive number or 'default', got {args.adam_eps!r}")
        if not args.adam_eps > 0:
            p.error(f"--adam-eps must be positive, got {args.adam_eps}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda asked for, but torch.cuda.is_available() is False on this machine")
    proto = Protocol(
        dataset=args.dataset, objective=args.objective, k=args.k if args.objective == "iwae" else 1, epochs=args.epochs,
        batch_size=args.batch_size, schedule=args.schedule, lr=args.lr, adam_eps=args.adam_eps, eval_samples=args.eval_samples,
        eval_chunk=args.eval_chunk, test_rows=args.test_rows, train_rows=args.train_rows, active_rows=args.active_rows,
        seed=args.seed, torch_seed=args.seed if args.torch_seed is None else args.torch_seed, test_binarization_seed=args.test_binarization_seed, device=str(device), threads=torch.get_num_threads(),
    )
    schedules = {name: StagedSchedule(proto.epochs, proto.lr) if proto.schedule == "burda" else constant_schedule(proto.lr) for name in ("bayesvae", "torch")}
    if args.impl in ("bayesvae", "both"):
        fit_options(proto, schedules["bayesvae"])  # fail before loading data when fit lacks an option
    header = machine_info(device)
    header["load_before"] = load_average()
    print(", ".join(f"{k}: {v}" for k, v in header.items()), flush=True)
    print(f"protocol: {proto.label}", flush=True)
    data = load_data(proto, find_data_dir(args.data_dir), device)
    print(f"data: {data.description}; train {tuple(data.train.shape)}, test {tuple(data.test.shape)}", flush=True)
    if proto.schedule == "burda":
        print(f"schedule: {schedules['torch'].describe()}", flush=True)
    estimator_check = None
    if args.check_estimators or (args.acceptance and args.impl == "both"):
        estimator_check = check_estimators(proto, data, device)
        print(
            "estimator check (same weights, {rows} test rows, K={samples}): bayesvae {bayesvae:.3f}, torch {torch:.3f},"
            " difference {difference:+.3f} +- {difference_se:.3f} nats".format(**estimator_check),
            flush=True,
        )

    def log(epoch: int, impl: str, elbo: float, seconds: float) -> None:
        if epoch == 1 or epoch % args.log_every == 0 or epoch == proto.epochs:
            print(f"epoch {epoch:5d} {impl:8s} train ELBO {elbo:9.3f}  {seconds:7.3f} s", flush=True)

    results: dict[str, dict[str, Any]] = {}
    trainers: dict[str, TorchTrainer] = {}
    if args.impl in ("torch", "both"):
        # "torch": the same Adam implementation as bayesvae's (fused where torch has it), so the
        # ratio measures the package's overhead; "torch-default-adam": torch.optim.Adam's default
        adams = {"fused": ["fused"], "default": ["default"], "both": ["fused", "default"]}[args.torch_adam]
        for adam in adams:
            t = TorchTrainer(proto, data, device, schedules["torch"], adam=adam)
            trainers["torch" if adam == "fused" or len(adams) == 1 else "torch-default-adam"] = t
    trainer = trainers.get("torch")

    def torch_epoch(e: int) -> None:
        order = list(trainers.items())
        for name, t in order[e % len(order):] + order[: e % len(order)]:  # rotate who runs first
            t.epoch(e)
            log(e + 1, name, t.elbos[-1], t.times[-1])

    bv_times = None
    if args.impl in ("bayesvae", "both"):
        fit, bv_times = run_bayesvae(proto, data, device, schedules["bayesvae"], torch_epoch if trainer else None, log, cuda_graphs=args.cuda_graphs)
        ev = evaluate_bayesvae(fit, proto, data)
        adam = "fused" if getattr(fit.config, "optimizer", "adam") == "adam-fused" else "default"
        results["bayesvae"] = {**ev, "adam": adam, "timing": timing_summary(bv_times)}
        calls = getattr(schedules["bayesvae"], "calls", None)
        if calls:
            results["bayesvae"]["schedule_epochs_called"] = [min(calls), max(calls)]
    elif trainers:
        for e in range(proto.epochs):
            torch_epoch(e)
    for name, t in trainers.items():
        ev = t.evaluate()
        results[name] = {**ev, "adam": t.adam, "timing": timing_summary(RunTimes(t.times, math.ceil(data.train.shape[0] / proto.batch_size), t.elbos))}
    header["load_after"] = load_average()
    for impl, r in results.items():
        t = r["timing"]
        print(
            f"{impl:8s} test log p(x) {r['log_px']:9.3f} +- {r['se']:.3f} (NLL {-r['log_px']:.2f})  ELBO {r['elbo']:9.3f}  active units {r['active_units']:2d}"
            f"  steady epoch min {t['steady_min_s']:.3f} s median {t['steady_median_s']:.3f} s  {t['steps_per_s_median']:.1f} steps/s  eval {r['eval_seconds']:.1f} s",
            flush=True,
        )
    comparison = compare(results, bv_times, trainer)
    if comparison and "torch-default-adam" in trainers:
        other = trainers["torch-default-adam"].times[1:]
        comparison["ratio_min_default_adam"] = min(bv_times.steady()) / min(other)
        comparison["ratio_median_default_adam"] = statistics.median(bv_times.steady()) / statistics.median(other)
        print(
            "against torch.optim.Adam's default implementation: bayesvae/torch min {ratio_min_default_adam:.3f}, median {ratio_median_default_adam:.3f}".format(**comparison),
            flush=True,
        )
    if comparison:
        print(
            "bayesvae - torch: log p(x) {dlogp:+.3f} nats; steady epoch time bayesvae/torch: min {ratio_min:.3f}, median {ratio_median:.3f},"
            " median of per-epoch pairs {ratio_paired:.3f}; steps/s (medians) bayesvae {bv_steps:.1f}, eager torch {torch_steps:.1f},"
            " bayesvae/torch {speed:.3f} (> 1: bayesvae faster)".format(**comparison),
            flush=True,
        )
    pub = proto.published()
    if pub:
        print(f"published: NLL {pub[0]:.2f} nats ({pub[1]})", flush=True)
    acceptance = None
    if args.acceptance and comparison:
        acceptance = {
            "loglik_within_0.5": abs(comparison["dlogp"]) <= 0.5,
            "epoch_ratio_min_le_1.05": comparison["ratio_min"] <= 1.05,
            "epoch_ratio_median_le_1.05": comparison["ratio_median"] <= 1.05,
            "epoch_ratio_paired_le_1.05": comparison["ratio_paired"] <= 1.05,
        }
        if estimator_check is not None:  # informational: the two estimators on the same weights
            acceptance["estimators_agree_within_4_se"] = abs(estimator_check["difference"]) <= 4 * estimator_check["difference_se"]
        acceptance["pass"] = acceptance["loglik_within_0.5"] and acceptance["epoch_ratio_min_le_1.05"]
        print(f"acceptance: {'PASS' if acceptance['pass'] else 'FAIL'} {acceptance}", flush=True)
    run = {
        "key": proto.label + f" [{args.impl}]" + (" [acceptance]" if args.acceptance else ""),
        "protocol": asdict(proto),
        "impl": args.impl,
        "acceptance_run": args.acceptance,
        "header": header,
        "data": data.description,
        "schedule": schedules["torch"].describe() if proto.schedule == "burda" else f"constant {proto.lr:g}",
        "results": results,
        "comparison": comparison,
        "estimator_check": estimator_check,
        "acceptance": acceptance,
        "published": None if pub is None else {"nll": pub[0], "source": pub[1]},
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    md = merge_runs(Path(args.out), run, render)
    print(f"wrote {md} and .json")
    return 0 if acceptance is None or acceptance["pass"] else 1


def compare(results, bv_times: RunTimes | None, trainer: TorchTrainer | None) -> dict[str, float] | None:
    """Log-likelihood difference and epoch-time ratios (steady state) of bayesvae over torch."""
    if "bayesvae" not in results or "torch" not in results:
        return None
    b, t = bv_times.steady(), trainer.times[1:] if len(trainer.times) > 1 else trainer.times
    paired = [x / y for x, y in zip(b, t)]
    return {
        "dlogp": results["bayesvae"]["log_px"] - results["torch"]["log_px"],
        "ratio_min": min(b) / min(t),
        "ratio_median": statistics.median(b) / statistics.median(t),
        "ratio_paired": statistics.median(paired),
        "speed": statistics.median(t) / statistics.median(b),
        "bv_steps": bv_times.steps_per_epoch / statistics.median(b),
        "torch_steps": bv_times.steps_per_epoch / statistics.median(t),
    }


def render(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "# Binarized MNIST test log-likelihood: bayesvae, hand-written PyTorch, and Burda et al. (2016)",
        "",
        "One stochastic layer (784-200-200-50 tanh, Bernoulli, N(0, I) prior, Glorot-uniform init, decoder output bias",
        "at the logit of the clipped mean training image, Adam). Test log p̂(x): importance-weighted with K samples per",
        "row, ± the standard error over rows; NLL = -log p̂(x), the number in Burda's tables. ELBO on the same draws.",
        "Active units: Cov_x E_q[z_u] > 0.01 on 500 training rows. Epoch times: wall clock, steady state (epochs after",
        "the first), min / median; with both implementations their epochs alternate in one process.",
        "Generated by `benchmarks/mnist_loglik.py`; see its docstring for the protocol and the estimators.",
        "",
        "| protocol | impl | test log p̂(x) ± SE | NLL | published NLL | ELBO | active units | epoch min / median (s) | steps/s | train (s) | eval (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        pub = run.get("published")
        for impl, r in run["results"].items():
            t = r["timing"]
            published = f"{pub['nll']:.2f}" if pub else "n/a"
            lines.append(
                f"| {run['key']} | {impl} | {r['log_px']:.2f} ± {r['se']:.2f} | {-r['log_px']:.2f} | {published} | {r['elbo']:.2f} | {r['active_units']}"
                f" | {t['steady_min_s']:.3f} / {t['steady_median_s']:.3f} | {t['steps_per_s_median']:.1f} | {t['total_train_s']:.0f} | {r['eval_seconds']:.0f} |"
            )
    lines += ["", "## Runs", ""]
    for run in runs:
        h = run["header"]
        lines += [
            f"### {run['key']}",
            "",
            f"- command: `{run['command']}`, finished {run['finished']}",
            f"- machine: {h.get('cpu')}, {h.get('cores')} cores, {h.get('torch_threads')} torch threads, device {h.get('device')}"
            + (f" ({h['gpu']}, CUDA {h.get('cuda')})" if h.get("gpu") else "")
            + f"; load average before {h.get('load_before')}, after {h.get('load_after')}",
            f"- versions: python {h.get('python')}, torch {h.get('torch')}, pyro {h.get('pyro')}, bayesvae {h.get('bayesvae')}",
            f"- data: {run['data']}",
            f"- seeds: training bayesvae {run['protocol']['seed']}, torch {run['protocol'].get('torch_seed', run['protocol']['seed'])} (separate streams), test subset {run['protocol']['seed']}, evaluation {run['protocol']['seed'] + 1}, active units {run['protocol']['seed'] + 2}"
            + (f", test binarization {run['protocol']['test_binarization_seed']}" if run["protocol"]["dataset"] == "dynamic" else ""),
            f"- schedule: {run['schedule']}",
        ]
        if run.get("published"):
            lines.append(f"- published: NLL {run['published']['nll']:.2f} nats, {run['published']['source']}")
        c = run.get("comparison")
        if c:
            lines.append(
                f"- bayesvae - torch: log p̂(x) {c['dlogp']:+.3f} nats; steady epoch time ratio bayesvae/torch: min {c['ratio_min']:.3f},"
                f" median {c['ratio_median']:.3f}, median of per-epoch pairs {c['ratio_paired']:.3f}; steps/s bayesvae {c['bv_steps']:.1f}, eager torch {c['torch_steps']:.1f}"
                + (f" (both with Adam '{run['results']['torch'].get('adam')}')" if run["results"]["torch"].get("adam") else "")
            )
            if "ratio_min_default_adam" in c:
                lines.append(
                    f"- against a PyTorch loop with torch.optim.Adam's default (for-loop) implementation: bayesvae/torch min {c['ratio_min_default_adam']:.3f},"
                    f" median {c['ratio_median_default_adam']:.3f}"
                )
        e = run.get("estimator_check")
        if e:
            lines.append(
                f"- estimator check (both estimators on the same initial weights, {e['rows']} test rows, K={e['samples']}): bayesvae {e['bayesvae']:.3f},"
                f" torch {e['torch']:.3f}, difference {e['difference']:+.3f} ± {e['difference_se']:.3f} nats"
            )
        a = run.get("acceptance")
        if a:
            lines.append(
                f"- **acceptance: {'PASS' if a['pass'] else 'FAIL'}** (|Δ log p̂| <= 0.5: {a['loglik_within_0.5']}; epoch ratio <= 1.05 on the minima: {a['epoch_ratio_min_le_1.05']},"
                f" on the medians: {a['epoch_ratio_median_le_1.05']}, paired: {a['epoch_ratio_paired_le_1.05']}; estimators agree within 4 SE: {a.get('estimators_agree_within_4_se', 'n/a')})"
            )
        if run.get("note"):
            lines.append(f"- note: {run['note']}")
        p = run["protocol"]
        if p["epochs"] < 20 or (p["train_rows"] and p["train_rows"] < 10000):
            lines.append("- **smoke run** (few epochs or a training subset): not comparable with the published numbers.")
        lines.append("")
    lines += [
        "Published numbers: Y. Burda, R. Grosse and R. Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016,",
        "arXiv:1509.00519 — Table 1 (dynamically binarized MNIST, 1 stochastic layer: VAE 86.76, IWAE k=50 84.78) and",
        "the appendix (static binarization, 1 layer: VAE 88.71, IWAE k=50 87.10). Burda's runs used the full schedule",
        "(3 280 epochs, batch 20) and K = 5000 on all 10 000 test rows; a shortened run is not expected to reach them.",
    ]
    return lines


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
