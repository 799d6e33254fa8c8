"""The HTML/Markdown report: self-contained, every image decodes, small, opens in Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image

import bayesvae as bv
from bayesvae.report import report

# Headless Chromium, with everything that would reach the network switched off.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
]

# Appended to a copy of the report only (the report itself has no script): after the load
# event, counts the images that decoded to a non-empty bitmap and logs a marker line.
CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter((img) => img.complete && img.naturalWidth > 0).length;
  document.body.setAttribute('data-images-total', imgs.length);
  document.body.setAttribute('data-images-ok', ok);
  console.log('bayesvae-check ' + ok + '/' + imgs.length);
});
</script>"""


@pytest.fixture(scope="module")
def digits_report(tmp_path_factory):
    data = bv.datasets.digits(binarize=True)
    train, valid = data.split(test_fraction=0.2, seed=0)
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(4), likelihood=bv.Bernoulli(), decoder=bv.MLP(4, 64, hidden=(64,)))
    guide = bv.AmortizedGuide(model, hidden=(64,))
    with torch.random.fork_rng():
        fit = bv.fit(model, guide, train, epochs=5, validation=valid, elbo="meanfield", seed=0)
    out = tmp_path_factory.mktemp("report") / "digits.html"
    start = time.perf_counter()
    path = report(fit, valid, out, title="Digits <VAE> & report", num_samples=100)
    return path, time.perf_counter() - start


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_is_self_contained_small_and_complete(digits_report):
    path, seconds = digits_report
    assert path.suffix == ".html" and path.exists()
    html = path.read_text(encoding="utf-8")
    assert seconds < 30, seconds
    assert path.stat().st_size < 5 * 2**20
    # no script, stylesheet link, frame or remote resource: everything is inline
    assert not re.search(r"<script|<link|<iframe|<object|<embed", html, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I)
    assert re.findall(r"<img [^>]*src=\"([a-z]+):", html) == ["data"] * html.count("<img ")
    # the title is escaped
    assert "<title>Digits &lt;VAE&gt; &amp; report</title>" in html
    for heading in ("Summary", "Is the variational posterior trustworthy?", "Posterior predictive checks", "Training", "Latent space", "Reconstructions and samples", "Settings"):
        assert f"<h2>{heading}</h2>" in html
    assert "log_px" in html and "k-hat" in html
    assert re.search(r"k-hat (&gt;|&lt;|&lt;=) 0\.[57]", html)
    # every embedded image is a complete PNG that decodes
    images = _images(html)
    assert len(images) == html.count("<img ") >= 9
    for png in images:
        im = Image.open(io.BytesIO(png))
        assert im.format == "PNG"
        im.load()
        assert im.size[0] > 50 and im.size[1] > 50


def test_markdown_twin_has_the_same_content(digits_report):
    path, _ = digits_report
    md = path.with_suffix(".md").read_text(encoding="utf-8")
    html = path.read_text(encoding="utf-8")
    assert md.startswith("# Digits <VAE> & report")
    for heading in re.findall(r"<h2>(.*?)</h2>", html):
        assert f"## {heading.replace('&#x27;', chr(39))}" in md
    links = re.findall(r"!\[(?:\\.|[^\]\\])*\]\(([^)]+)\)", md)
    assert len(links) == len(_images(html))
    for link in links:
        png = (path.parent / link).read_bytes()
        Image.open(io.BytesIO(png)).load()
    assert "| log_px |" in md
    # a '|' inside a cell is escaped, so every table row has the header's number of cells
    row = next(line for line in md.splitlines() if line.startswith("| reconstruction |"))
    assert "E_q[log p(x_n \\| z)]" in row and len(re.split(r"(?<!\\)\|", row)) == 5


def test_report_opens_in_headless_chromium_without_console_errors(digits_report, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not on PATH: install Debian's 'chromium' package (apt-get install -y chromium) to run the headless-browser check of the report")
    path, _ = digits_report
    html = path.read_text(encoding="utf-8")
    page = tmp_path / "check.html"
    page.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body is not None, proc.stdout[:500]
    total = int(re.search(r'data-images-total="(\d+)"', body.group(1)).group(1))
    ok = int(re.search(r'data-images-ok="(\d+)"', body.group(1)).group(1))
    assert total == html.count("<img ") and ok == total
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    # the marker proves console output is captured; nothing else may be logged
    assert any(f"bayesvae-check {total}/{total}" in line for line in console), proc.stderr[-2000:]
    others = [line for line in console if "bayesvae-check" not in line]
    assert not others, others


def test_report_argument_errors(tmp_path):
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(scale=1.0), decoder=bv.MLP(2, 3))
    guide = bv.AmortizedGuide(model, hidden=(4,))
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"report path must end in \.html"):
        report((model, guide), x, tmp_path / "report.pdf")
    with pytest.raises(ValueError, match="is a directory; pass a file name"):
        report((model, guide), x, tmp_path)
    with pytest.raises(ValueError, match="needs num_samples >= 25 importance samples"):
        report((model, guide), x, tmp_path / "r.html", num_samples=10)
    with pytest.raises(ValueError, match="ppc_samples must be at least 2"):
        report((model, guide), x, tmp_path / "r.html", num_samples=30, ppc_samples=1)


def test_report_of_a_model_guide_pair_on_tabular_data(tmp_path):
    import pandas as pd

    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(scale=1.0), decoder=bv.MLP(2, 3))
    guide = bv.AmortizedGuide(model, hidden=(4,))
    x = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 3)), columns=["age", "height", "weight"])
    path = report((model, guide), x, tmp_path / "sub" / "pair.html", num_samples=30, ppc_samples=10)
    html = path.read_text()
    assert "<h2>Training</h2>" not in html  # a pair has no history
    assert "<h2>Latent space</h2>" in html and "height" in html


def test_report_for_an_ibp_fit_shows_feature_usage(tmp_path):
    ibp = pytest.importorskip("bayesvae.models.ibp")
    data, _ = bv.datasets.bars(60, seed=0)
    torch.manual_seed(0)
    model = bv.VAE(prior=ibp.IBPPrior(2.0, truncation=5), likelihood=bv.Gaussian(scale=0.5), decoder=bv.MLP(5, 36))
    guide = bv.AmortizedGuide(model, hidden=(16,))
    fit = bv.fit(model, guide, data, epochs=1, seed=0)
    path = report(fit, data, tmp_path / "ibp.html", num_samples=30, ppc_samples=10)
    html = path.read_text()
    assert "<h2>Prior</h2>" in html
    assert 'id="fig-ibp_usage"' in html and 'id="fig-global_sites"' in html


def test_report_for_an_ard_fit_shows_relevance(tmp_path):
    hier = pytest.importorskip("bayesvae.models.hierarchical")
    data, _ = bv.datasets.linear_gaussian(80, 6, 2, 0.5, seed=0)
    torch.manual_seed(0)
    model = bv.VAE(prior=hier.ARDPrior(3, width=6), likelihood=bv.Gaussian(data_dim=6), decoder=hier.ARDDecoder(6))
    guide = bv.AmortizedGuide(model, hidden=(8,))
    fit = bv.fit(model, guide, data, epochs=1, seed=0)
    html = report(fit, data, tmp_path / "ard.html", num_samples=30, ppc_samples=10).read_text()
    assert 'id="fig-ard_relevance"' in html and 'id="fig-global_sites"' in html


def test_cli_report_writes_html_and_markdown(tmp_path, capsys):
    from bayesvae.cli import main

    run = tmp_path / "run"
    assert main(["fit", "--data", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "rep" / "report.html"
    assert main(["report", str(run), "--out", str(out), "--num-samples", "30"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.exists() and out.with_suffix(".md").exists()
    assert "<h1>bayesvae report: run</h1>" in out.read_text()


def test_report_asks_the_prior_for_its_sections(tmp_path):
    """A prior of the user's own joins the report through Prior.summaries, with no change to the report."""
    import pandas as pd

    from bayesvae.models import PriorSummary

    class TabledPrior(bv.GaussianPrior):
        def summaries(self, guide, x=None, *, groups=None):
            frame = pd.DataFrame({"rows seen": [int(x.shape[0])]})
            return (PriorSummary("mine", "Mine", "table", frame, "A table of the prior's own."),)

    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    model = bv.VAE(prior=TabledPrior(2), likelihood=bv.Gaussian(scale=1.0), decoder=bv.MLP(2, 3))
    guide = bv.AmortizedGuide(model, hidden=(4,))
    html = report((model, guide), x, tmp_path / "own.html", num_samples=30, ppc_samples=10).read_text()
    assert "<h2>Prior</h2>" in html and "A table of the prior&#x27;s own." in html and "rows seen" in html


def test_report_of_a_group_prior_shows_group_effects_and_pooling(tmp_path):
    from bayesvae.models import GroupPrior

    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    g = np.arange(30) % 3
    model = bv.VAE(prior=GroupPrior(2, groups=3), likelihood=bv.Gaussian(scale=1.0), decoder=bv.MLP(2, 3))
    guide = bv.AmortizedGuide(model, hidden=(4,))
    fit = bv.fit(model, guide, x, groups=g, epochs=1, seed=0)
    path = report(fit, x, tmp_path / "groups.html", groups=g, num_samples=30, ppc_samples=10)
    html = path.read_text()
    assert 'id="fig-group_effects"' in html and 'id="fig-global_sites"' in html
    assert "Observed shrinkage" in html and "shrinkage" in path.with_suffix(".md").read_text()


def test_report_sections_are_built_from_the_computed_results(tmp_path):
    from bayesvae.report.compute import compute
    from bayesvae.report.sections import SECTIONS

    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(scale=1.0), decoder=bv.MLP(2, 3))
    guide = bv.AmortizedGuide(model, hidden=(4,))
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    results = compute((model, guide), x, num_samples=30, seed=0, groups=None, labels=None, ppc_samples=10)
    assert results.history is None and results.prior_summaries == () and results.global_intervals is None
    assert results.metrics.shape[0] == 1 and results.pareto.khat.shape == (40,)
    titles = [s.title for s in (build(results, 40) for build in SECTIONS) if s is not None]
    assert titles == ["Summary", "Is the variational posterior trustworthy?", "Posterior predictive checks", "Latent space", "Reconstructions and samples", "Settings"]
