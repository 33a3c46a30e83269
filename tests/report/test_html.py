"""The HTML report: self-contained, every image loads in headless Chromium, no console errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from protoprune.config import load_config
from protoprune.metrics import compute_metrics
from protoprune.models.factory import build_model
from protoprune.report.html import build_report
from protoprune.train.checkpoint import save_checkpoint
from protoprune.train.run import write_metrics
from tests.explain.fixtures import trained_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def protopnet_report(module_tmp) -> Path:
    out = module_tmp / "report"
    return build_report(trained_run(), out, samples=2, device="cpu", progress=False,
                        quality_images=1)  # the metrics on 1 nearest test image: the same paths


@pytest.fixture(scope="module")
def baseline_report(module_tmp) -> Path:
    """A baseline-classifier run folder: checkpoint, config and metrics (no training needed)."""
    run = module_tmp / "baseline"
    cfg = load_config(None, ["name=baseline", "model.arch=resnet18", "data.image_size=28"])
    names = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    save_checkpoint(run / "checkpoints" / "best.pt", build_model(cfg, 7), cfg, names)
    rng = np.random.default_rng(0)
    y = np.arange(70) % 7
    probs = rng.dirichlet(np.ones(7), 70)
    write_metrics(
        run,
        {"val": compute_metrics(y, probs, names), "test": compute_metrics(y, probs, names)},
        "baseline",
        names,
    )
    return build_report(run, device="cpu")


def _local_sources(page: Path) -> list[str]:
    text = page.read_text()
    return re.findall(r'<img src="([^"]+)"', text) + re.findall(r'<a href="(?!#)([^"]+)"', text)


@pytest.mark.parametrize("which", ["protopnet_report", "baseline_report"])
def test_report_is_self_contained(which, request) -> None:
    page: Path = request.getfixturevalue(which)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    sources = _local_sources(page)
    assert sources
    for src in sources:
        assert (page.parent / src).is_file(), src
    for section in ("Configuration", "Metrics", "Confusion matrix"):
        assert section in text
    if which == "protopnet_report":
        for section in (
            "Prototypes by class",
            "Local explanations",
            "Global analysis",
            "Prototype quality",
        ):
            assert section in text
        index = json.loads((page.parent / "explain" / "explanations.json").read_text())
        assert [s["label"] for s in index["local"]][0] == "mel"  # melanoma first
        assert len(index["gallery"]) == 14
    else:
        assert "Local explanations" not in text


def _chromium(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=10000", *extra, page.resolve().as_uri(),
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("which", ["protopnet_report", "baseline_report"])
def test_report_loads_in_headless_chromium(which, request, tmp_path) -> None:
    page: Path = request.getfixturevalue(which)
    run = _chromium(page, tmp_path, "--dump-dom")
    check = re.search(r'id="image-check"[^>]*>', run.stdout)
    assert check, f"the check script did not run:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    n_images = len(re.findall(r"<img ", page.read_text()))
    assert f'data-images="{n_images}"' in check.group(0)
    assert 'data-broken="0"' in check.group(0), check.group(0)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    shot = tmp_path / "shot.png"
    _chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_protopnet_report_states_how_much_the_boxes_localise(protopnet_report) -> None:
    """The tiny run's ResNet18 at 48 px: every latent cell sees the whole image, so the report
    warns, draws the receptive field beside the box and shows PRP and the quality table."""
    text = protopnet_report.read_text()
    assert "Not localised:" in text and "they are not localised parts of the lesion" in text
    assert "cyan box: the receptive field" in text and "PRP map" in text
    assert "Explanation quality" in text and "deletion AUC, PRP order" in text
    assert "sees 100 % of the image" in text  # each gallery card states its field's share
    summary = json.loads(
        (protopnet_report.parent / "explain" / "quality" / "summary.json").read_text()
    )
    assert summary["max_rf_fraction"] == 1.0 and 0 <= summary["mean_stability"] <= 1
