"""The bayesvae command line: help texts, a tiny fit end to end, and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bayesvae.cli import build_parser, main


@pytest.mark.parametrize("command", [[], ["fit"], ["evaluate"], ["compare"], ["report"]])
def test_help_is_complete(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage: bayesvae" in text
    if command == ["fit"]:
        for flag in ("--data", "--prior", "--likelihood", "--latent-dim", "--epochs", "--out", "--resume", "--elbo", "--device"):
            assert flag in text
    # every option has a help string
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for p in [parser, *subparsers.values()]:
        for action in p._actions:
            assert action.help, (p.prog, action.dest)


def test_fit_writes_run_directory_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["fit", "--data", "digits", "--likelihood", "bernoulli", "--latent-dim", "2", "--hidden", "16", "--epochs", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    for name in ("fit.safetensors", "config.json", "history.csv", "history.png", "reconstructions.png", "prior_samples.png", "cli.json"):
        assert (out / name).exists(), name
    assert "ELBO per point" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["prior"] == {"type": "GaussianPrior", "latent_dim": 2}
    # resume to more epochs continues the history
    assert main([*args[:-5], "--epochs", "3", "--out", str(out), "--quiet", "--resume"]) == 0
    assert len((out / "history.csv").read_text().strip().splitlines()) == 1 + 3


def test_errors_are_reported_with_choices(tmp_path, capsys):
    assert main(["fit", "--prior", "dirichlet", "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown prior 'dirichlet'; choose one of" in err and "gaussian" in err
    assert main(["fit", "--likelihood", "beta", "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "unknown likelihood 'beta'" in capsys.readouterr().err
    assert main(["fit", "--data", str(tmp_path / "missing.csv"), "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "missing.csv" in capsys.readouterr().err
    # intensities under a Bernoulli likelihood, from a file: not silently binarized
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(size=(20, 4)))
    assert main(["fit", "--data", str(tmp_path / "x.npy"), "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "Bernoulli likelihood needs binary data" in capsys.readouterr().err


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "bayesvae.cli", "--help"], capture_output=True, text=True, check=True)
    assert "fit" in result.stdout and "evaluate" in result.stdout and "report" in result.stdout


def test_evaluate_and_compare_on_the_held_out_split(tmp_path, capsys):
    runs = []
    for latent in (3, 1):
        out = tmp_path / f"z{latent}"
        assert main(["fit", "--latent-dim", str(latent), "--hidden", "16", "--epochs", "3", "--out", str(out), "--quiet"]) == 0
        runs.append(str(out))
    capsys.readouterr()
    assert main(["evaluate", runs[0], "--num-samples", "20", "--out", str(tmp_path / "ev")]) == 0
    text = capsys.readouterr().out
    assert "log_px" in text and "log_px_se" in text
    assert (tmp_path / "ev" / "evaluation.csv").exists() and (tmp_path / "ev" / "evaluation.md").exists()
    assert main(["compare", *runs, "--num-samples", "20", "--out", str(tmp_path / "cmp")]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert list(table["rank"]) == [1, 2]
    assert {"log_px", "log_px_se", "d_se"} <= set(table.columns)
    # a run fitted on all rows has no held-out split to evaluate on
    full = tmp_path / "full"
    assert main(["fit", "--latent-dim", "1", "--hidden", "8", "--epochs", "1", "--validation-fraction", "0", "--out", str(full), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(full), "--num-samples", "5"]) == 2
    assert "no held-out split" in capsys.readouterr().err
    assert main(["evaluate", str(full), "--num-samples", "5", "--split", "all"]) == 0


@pytest.mark.parametrize("prior", ["gaussian", "ibp", "ibp-weighted", "ard", "two-level", "mixture", "vamp"])
def test_fit_every_prior_from_the_command_line(prior, tmp_path):
    from bayesvae.cli import PRIORS

    assert prior in PRIORS
    out = tmp_path / prior
    assert main(["fit", "--prior", prior, "--latent-dim", "4", "--hidden", "16", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    import bayesvae as bv

    fit = bv.load(out)
    assert len(fit.history) == 2 and fit.history["elbo"].notna().all()


# --------------------------------------------------------------------------- cold start, -m, --version

_PROBE = """
import sys
from bayesvae.cli import main
try:
    main({argv!r})
except SystemExit as exit_:
    assert exit_.code == 0, exit_.code
heavy = sorted(m for m in ("torch", "pyro", "arviz", "matplotlib", "pandas") if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["report", "--help"], ["--version"]])
def test_help_and_version_import_no_torch_pyro_or_arviz(argv):
    result = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True, text=True, check=True)
    assert "usage: bayesvae" in result.stdout or "bayesvae 0.1.0" in result.stdout
    assert "HEAVY []" in result.stdout, result.stdout[-300:]


def test_package_root_is_lazy_and_exports_every_name():
    probe = "import sys, bayesvae; print('torch' in sys.modules); print(bayesvae.__version__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "0.1.0"]
    import bayesvae

    for name in bayesvae.__all__:
        assert getattr(bayesvae, name) is not None, name
    assert bayesvae.IBPPrior is __import__("bayesvae.models", fromlist=["IBPPrior"]).IBPPrior
    with pytest.raises(AttributeError, match="module 'bayesvae' has no attribute 'nope'"):
        bayesvae.nope  # noqa: B018


def test_python_dash_m_bayesvae_and_version():
    import bayesvae

    result = subprocess.run([sys.executable, "-m", "bayesvae", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"bayesvae {bayesvae.__version__}"
    result = subprocess.run([sys.executable, "-m", "bayesvae", "fit", "--help"], capture_output=True, text=True, check=True)
    assert "--prior" in result.stdout and "usage: bayesvae fit" in result.stdout


def test_cli_prior_names_are_the_catalogs():
    from bayesvae.cli import PRIORS
    from bayesvae.models.catalog import PRIORS as CATALOG
    from bayesvae.models.catalog import PriorRequest, build_prior

    assert list(PRIORS) == list(CATALOG)
    with pytest.raises(ValueError, match=r"unknown prior 'dirichlet'; choose one of \['ard', "):
        build_prior("dirichlet", PriorRequest(latent_dim=2, out_features=3))


@pytest.mark.parametrize("name", ["gaussian", "ibp", "ibp-weighted", "ard", "two-level", "mixture"])
@pytest.mark.parametrize("hidden", [(), (16, 8)])
def test_every_named_prior_builds_a_model_with_its_own_decoder(name, hidden):
    import torch

    import bayesvae as bv
    from bayesvae.models.catalog import PriorRequest, build_prior

    prior = build_prior(name, PriorRequest(latent_dim=4, out_features=6, hidden=hidden, alpha=1.5, components=3))
    decoder = prior.make_decoder(6, hidden=hidden)
    model = bv.VAE(prior=prior, likelihood=bv.Gaussian(scale=1.0), decoder=decoder)
    torch.manual_seed(0)
    assert model.sample(3)["x"].shape == (3, 6)


def test_fit_refuses_to_replace_an_existing_run_without_overwrite(tmp_path, capsys):
    from bayesvae.cli import main

    args = ["fit", "--data", "digits-binary", "--epochs", "1", "--latent-dim", "2", "--out", str(tmp_path / "run"), "--quiet"]
    assert main(args) == 0
    before = (tmp_path / "run" / "fit.safetensors").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bayesvae fit: error:") and "already holds a fit" in err and len(err.splitlines()) == 1
    assert (tmp_path / "run" / "fit.safetensors").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    (tmp_path / "afile").write_text("x")
    assert main([*args[:-3], "--out", str(tmp_path / "afile"), "--quiet"]) == 2
    assert "is an existing file" in capsys.readouterr().err


def test_fit_takes_distributed_settings():
    from bayesvae.cli import build_parser

    args = build_parser().parse_args(["fit", "--data", "digits", "--distributed", "--distributed-timeout", "20"])
    assert args.distributed and args.distributed_timeout == 20.0
    assert build_parser().parse_args(["fit", "--data", "digits"]).distributed_timeout == 300.0
