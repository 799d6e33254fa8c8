"""Out-of-core data: peak resident memory of fit + evaluate on ``.npy`` files of growing size.

For each file size (float32 ``.npy`` of ``d = 256`` columns, written to a scratch directory
and deleted afterwards) a fresh Python process

1. imports bayesvae, fits a small MLP VAE (256-128-8, Gaussian likelihood with a learned
   scale per feature, amortized Gaussian guide) once on 2048 in-memory rows as a warm-up
   (imports, allocator), builds a fresh one and records its resident set size: the
   **baseline**;
2. fits it for 1 epoch at batch size 1024 (``elbo="meanfield"``, ``jit=False``) on the data,
   opened as ``np.load(path, mmap_mode="r")`` (``api``) or through the command line's
   reader and split (``cli``: ``bayesvae.cli._load_data`` + ``_split`` with a 0.2 validation
   fraction, the validation ELBO every epoch) -- or, for contrast, loaded into memory
   (``in-memory``: ``np.load(path)``, the smallest size only);
3. evaluates ``bayesvae.evaluation.log_marginal_likelihood`` with K = 16 samples on the
   first 4096 rows (rows of the memory map, so the evaluation streams too);
4. reports the peak resident set size (``VmHWM`` of ``/proc/self/status``; it counts the
   pages of a memory map the process has touched, too) minus the baseline.

Target: flat in the file size and under 1 GiB above the baseline.

Usage: ``python benchmarks/out_of_core.py [--sizes 0.25 1 2] [--dir /tmp]``. ``--quick``
uses 0.05 GiB (a smoke test, not a measurement). Writes ``benchmarks/results/out_of_core.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WIDTH = 256
BATCH = 1024
EVAL_ROWS = 4096
EVAL_SAMPLES = 16
RESULTS = Path(__file__).resolve().parent / "results" / "out_of_core.md"
NOTES = (
    "How: `fit` and `log_marginal_likelihood` get a `bayesvae.streaming.DiskArray` instead of a tensor; it is "
    "validated in 32 MiB chunks and each minibatch or scoring block gathers its rows from the memory map. "
    "`VmHWM` counts mapped file pages, and the kernel maps 64 KiB around every faulting page, so the array tells "
    "the kernel to drop the mapping (`madvise(MADV_DONTNEED)`) after every 32 MiB it makes resident; without "
    "that a random-order epoch leaves the whole file resident. What remains above the baseline is the training "
    "step's own memory plus per-row index arrays (`torch.randperm` of the rows; for `cli` also scikit-learn's "
    "split indices and the two parts' row maps, 8-16 bytes a row), hence the small differences between sizes. "
    "`in-memory` (the previous behaviour for any array) holds the file, its float32 tensor and a data-sized "
    "validation temporary: 3.75x the file. Times are from a shared 2-core machine with other jobs running: noisy."
)


def _status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def write_file(path: Path, gib: float) -> int:
    """A float32 ``(n, WIDTH)`` .npy of about ``gib`` GiB, written 64 MiB at a time; returns n."""
    n = int(gib * 2**30) // (4 * WIDTH)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, WIDTH))
    rng = np.random.default_rng(0)
    step = 2**26 // (4 * WIDTH)
    for start in range(0, n, step):
        stop = min(start + step, n)
        out[start:stop] = rng.standard_normal((stop - start, WIDTH), dtype=np.float32)
    out.flush()
    del out
    return n


def child(path: str, mode: str) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    import bayesvae as bv
    from bayesvae.evaluation import log_marginal_likelihood

    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(8), likelihood=bv.Gaussian(data_dim=WIDTH), decoder=bv.MLP(8, WIDTH, hidden=(128,)))
    guide = bv.AmortizedGuide(model, hidden=(128,))
    from bayesvae import cli  # the CLI's own reader and split

    # warm-up on a small in-memory array, so that the baseline holds the imported libraries
    # and the allocator's steady state, and what is measured above it is the data's share
    warm = np.random.default_rng(1).standard_normal((2 * BATCH, WIDTH), dtype=np.float32)
    log_marginal_likelihood(bv.fit(model, guide, warm, epochs=1, batch_size=BATCH, seed=0, jit=False), warm[:256], num_samples=EVAL_SAMPLES)
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(8), likelihood=bv.Gaussian(data_dim=WIDTH), decoder=bv.MLP(8, WIDTH, hidden=(128,)))
    guide = bv.AmortizedGuide(model, hidden=(128,))
    baseline = _status("VmRSS")
    t0 = time.perf_counter()
    validation = None
    if mode == "in-memory":
        data = np.load(path)
    elif mode == "api":
        data = np.load(path, mmap_mode="r")
    else:
        ds = cli._load_data(path, likelihood="gaussian", binarize="no")
        data, validation = cli._split(ds, 0.2, 0)
    fit = bv.fit(model, guide, data, validation=validation, epochs=1, batch_size=BATCH, lr=1e-3, seed=0, jit=False)
    t_fit = time.perf_counter() - t0
    rows = data.x.take(np.arange(EVAL_ROWS)) if mode == "cli" else data[:EVAL_ROWS]
    t1 = time.perf_counter()
    lml = log_marginal_likelihood(fit, rows, num_samples=EVAL_SAMPLES, seed=0)
    t_eval = time.perf_counter() - t1
    print(json.dumps({
        "baseline": baseline,
        "peak": _status("VmHWM"),
        "fit_s": t_fit,
        "eval_s": t_eval,
        "elbo": float(fit.history["elbo"].iloc[-1]),
        "log_px": lml.mean,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 1.0, 2.0], help="file sizes in GiB")
    parser.add_argument("--dir", default="/tmp", help="scratch directory for the files (deleted afterwards)")
    parser.add_argument("--quick", action="store_true", help="one 0.05 GiB file: a smoke test")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = [0.05] if args.quick else args.sizes
    scratch = Path(args.dir) / f"bayesvae_out_of_core_{os.getpid()}"
    free = shutil.disk_usage(args.dir).free
    if free < 1.5 * max(sizes) * 2**30:
        raise SystemExit(f"{args.dir} has {free / 2**30:.1f} GiB free; need {1.5 * max(sizes):.1f} GiB")
    scratch.mkdir()
    rows = []
    try:
        for gib in sizes:
            path = scratch / f"x_{gib:g}GiB.npy"
            n = write_file(path, gib)
            modes = ["api", "cli"] + (["in-memory"] if gib == min(sizes) else [])
            for mode in modes:
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                out = subprocess.run([sys.executable, __file__, "--child", str(path), mode], capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    raise SystemExit(f"child {mode} on {path} failed:\n{out.stderr[-3000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                above = (r["peak"] - r["baseline"]) / 2**20
                rows.append({"GiB": gib, "rows": n, "mode": mode, **r, "above_MiB": above})
                print(f"{gib:5.2f} GiB  {n:>9,d} rows  {mode:9s}  baseline {r['baseline'] / 2**20:6.0f} MiB  peak {r['peak'] / 2**20:6.0f} MiB  above baseline {above:6.0f} MiB  fit {r['fit_s']:6.1f} s  eval {r['eval_s']:5.1f} s", flush=True)
            path.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not args.quick:
        render(rows)


def render(rows: list[dict]) -> None:
    import torch

    import bayesvae

    lines = [
        "# Out-of-core data: peak resident memory of fit + evaluate",
        "",
        f"`python benchmarks/out_of_core.py` -- {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, bayesvae {bayesvae.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Float32 `.npy` files of {WIDTH} columns. Each row is a fresh process: build a {WIDTH}-128-8 MLP VAE (Gaussian likelihood), then fit 1 epoch at batch {BATCH} and `log_marginal_likelihood` with K = {EVAL_SAMPLES} on the first {EVAL_ROWS} rows. *Baseline*: resident set size after imports, a warm-up fit + evaluation on 2048 in-memory rows and building a fresh model, before the data are opened; *peak*: `VmHWM` (which counts touched pages of a memory map too) at the end. `api`: `np.load(path, mmap_mode='r')` passed to `fit`; `cli`: the command line's `.npy` reader and its 0.2 validation split (validation ELBO included); `in-memory`: `np.load(path)` (the old way, for contrast).",
        "",
        "| file | rows | mode | baseline MiB | peak MiB | above baseline MiB | above / file size | fit s | evaluate s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['GiB']:g} GiB | {r['rows']:,d} | {r['mode']} | {r['baseline'] / 2**20:.0f} | {r['peak'] / 2**20:.0f} | **{r['above_MiB']:.0f}** | {r['above_MiB'] / (r['GiB'] * 1024):.2f} | {r['fit_s']:.1f} | {r['eval_s']:.1f} |"
        )
    lines += ["", NOTES]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
