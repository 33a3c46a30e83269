"""The quick study end to end on bundled real data (2 seeds), its tables, plots and resumption."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from protoprune.data.registry import bundled_path
from protoprune.demo import packaged_config
from protoprune.errors import ConfigError
from protoprune.metrics import HEADLINE
from protoprune.study import StudyLog, load_study_config, run_study
from protoprune.study.plots import write_plots

SEEDS = [0, 1]
# two of the quick study's four criteria: grad and taylor run the same unit code under another
# name (tests/prune checks each criterion); two are enough for the tables' criterion rows
CRITERIA = ["lrp", "weight"]
ARMS = {("baseline", ""), ("protopnet", ""), ("protopnet_pruned", ""), ("protopnet_filter", "lrp")}
ARMS |= {("filter", m) for m in CRITERIA}


def isic_layout(root):
    """A real ISIC 2018 Task 3 layout (one-hot CSV + images/) from the bundled HAM10000 images."""
    meta = pd.read_csv(bundled_path("ham10000", "HAM10000_metadata.csv"))
    (root / "images").mkdir(parents=True)
    rows = []
    for _, r in meta.iterrows():
        src = bundled_path("ham10000", "images", f"{r['image_id']}.jpg")
        shutil.copy(src, root / "images" / src.name)
        rows.append({"image": r["image_id"], **{c: float(c.lower() == r["dx"]) for c in
                     ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")}})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    return root


@pytest.fixture(scope="module")
def study(module_tmp):
    base = module_tmp
    isic = isic_layout(base / "isic")
    overrides = [f"seeds={SEEDS}", f"external_test={isic}", f"criteria=[{','.join(CRITERIA)}]",
                 "explanation_images=1"]  # fmt: skip
    cfg = load_study_config(packaged_config("study_quick.yaml"), overrides)
    out = base / "out"
    # one intra-op thread (tests/conftest.py sets two): on the shared 2-core machine two threads
    # oversubscribe and training runs ~25x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        per_seed = run_study(cfg, out, progress=False)
        first = StudyLog(out).events()
        yield {"cfg": cfg, "out": out, "per_seed": per_seed, "first_events": first}
    finally:
        torch.set_num_threads(threads)


def test_every_arm_and_seed_is_in_the_table(study):
    df = study["per_seed"]
    got = {(a, m, s) for a, m, s in zip(df["arm"], df["method"].fillna(""), df["seed"])}
    assert got == {(a, m, s) for a, m in ARMS for s in SEEDS}
    saved = pd.read_csv(study["out"] / "results" / "per_seed.csv")
    assert len(saved) == len(df) == len(ARMS) * len(SEEDS)
    ok = df[df["status"] == "ok"]
    for k in HEADLINE[:2]:
        assert ok[f"test_{k}"].between(0, 1).all() and ok[f"ext_{k}"].between(0, 1).all()
    assert (ok["macs"] > 0).all() and (ok["latency_ms_b1"] > 0).all()
    # filter pruning removed about 30 % of the filters and made the model cheaper than its baseline
    filt = ok[ok["arm"] == "filter"]
    assert np.allclose(filt["pruned_ratio"], 0.3, atol=0.02)
    base_macs = ok[ok["arm"] == "baseline"].set_index("seed")["macs"]
    assert (filt["macs"].to_numpy() < base_macs.loc[filt["seed"]].to_numpy()).all()
    # arm 4: the ProtoPNet's trunk pruned by ~30 % of its filters, cheaper than the ProtoPNet
    both = ok[ok["arm"] == "protopnet_filter"]
    assert len(both) == len(SEEDS) and np.allclose(both["pruned_ratio"], 0.3, atol=0.02)
    proto_macs = ok[ok["arm"] == "protopnet"].set_index("seed")["macs"]
    assert (both["macs"].to_numpy() < proto_macs.loc[both["seed"]].to_numpy()).all()


def test_protopnet_arms_carry_explanation_quality(study):
    df = study["per_seed"]
    proto = df[df["arm"].str.startswith("protopnet")]
    for c in ("expl_mean_stability", "expl_mean_on_lesion_prp", "expl_background_share",
              "expl_distinct_sources", "expl_max_rf_fraction"):  # fmt: skip
        assert proto[c].between(0, 1).all(), c
    assert (proto["expl_mean_deletion_auc_random"] > 0).all()
    assert df.loc[df["arm"] == "baseline", "expl_mean_stability"].isna().all()
    text = (study["out"] / "results" / "summary.md").read_text()
    section = text.split("## Explanation quality (ProtoPNet arms)")[1].split("\n## ")[0]
    assert section.count("\n| ") == 1 + 3  # the heading row and the three ProtoPNet arms
    # each metric beside its control: the deletion rows' difference recomputed from the rows
    controls = pd.read_csv(study["out"] / "results" / "explanation_controls.csv")
    row = controls[(controls["arm"] == "protopnet") & (controls["column"] == "expl_mean_deletion_auc_prp")].iloc[0]
    ours = proto[proto["arm"] == "protopnet"]
    diff = ours["expl_mean_deletion_auc_prp"] - ours["expl_mean_deletion_auc_random"]
    assert row["minus_control"] == pytest.approx(diff.mean()) and row["n_seeds"] == len(SEEDS)
    assert "Explanation metrics beside their controls" in (study["out"] / "index.html").read_text()


def test_filter_rows_match_the_pruning_runs_last_step(study):
    """The study's final metrics come from the saved last-step model: same numbers as prune_filters'."""
    df = study["per_seed"]
    for _, row in df[df["arm"] == "filter"].iterrows():
        steps = pd.read_csv(study["out"] / "runs" / row["unit"] / "results.csv")
        assert steps["pruned_ratio"].iloc[-1] == pytest.approx(row["pruned_ratio"])
        assert steps["test_accuracy"].iloc[-1] == pytest.approx(row["test_accuracy"])
        assert steps["test_accuracy_pruned"].iloc[-1] == pytest.approx(row["test_accuracy_pruned"])


def test_mean_std_and_deltas_recomputed_from_per_seed_rows(study):
    per_seed = pd.read_csv(study["out"] / "results" / "per_seed.csv")
    per_seed["method"] = per_seed["method"].fillna("")
    summary = pd.read_csv(study["out"] / "results" / "summary.csv")
    summary["method"] = summary["method"].fillna("")
    base = per_seed[per_seed["arm"] == "baseline"].set_index("seed")
    checked = 0
    for _, s in summary[summary["status"] == "ok"].iterrows():
        rows = per_seed[(per_seed["arm"] == s["arm"]) & (per_seed["method"] == s["method"])]
        assert s["n_seeds"] == len(rows) == len(SEEDS)
        for col in ["test_accuracy", "test_balanced_accuracy", "test_melanoma_sensitivity",
                    "test_auroc_macro", "macs", "params", "latency_ms_b1", "ext_accuracy"]:  # fmt: skip
            v = rows[col].to_numpy(dtype=float)
            assert s[f"{col}_mean"] == pytest.approx(v.mean())
            assert s[f"{col}_std"] == pytest.approx(np.std(v, ddof=1))
            checked += 1
        delta = (
            rows["test_accuracy"].to_numpy() - base.loc[rows["seed"], "test_accuracy"].to_numpy()
        )
        assert np.allclose(rows["delta_accuracy"], delta)
        assert s["delta_accuracy_mean"] == pytest.approx(delta.mean())
    assert checked >= (len(ARMS) - 1) * 8  # every column of all arms but at most one


def test_plots_exist_open_and_are_in_the_report(study):
    out = study["out"]
    html = (out / "index.html").read_text()
    names = ["accuracy_vs_ratio.png", "balanced_accuracy_vs_ratio.png", "accuracy_vs_macs.png",
             "latency_vs_macs.png", "per_class_recall.png", "retention_front.png"]  # fmt: skip
    for name in names:
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200
        assert f'src="{name}"' in html
    assert "http://" not in html and "https://" not in html
    assert "Filter pruning (lrp)" in html and "ProtoPNet + filter pruning" in html
    # the ProtoPNet arm's per-step curve carries what the front draws
    curves = pd.read_csv(out / "results" / "curves.csv")
    proto = curves[curves["arm"] == "protopnet_filter"]
    assert set(proto["seed"]) == set(SEEDS) and proto["retention_topk_jaccard"].notna().any()


def test_plots_of_a_study_without_filter_pruning(study, tmp_path):
    # arms [baseline, protopnet] (configs/study_protopnet.yaml): no pruning curves at all
    per_seed = study["per_seed"]
    sub = per_seed[per_seed["arm"].isin(["baseline", "protopnet"])]
    plots = write_plots(tmp_path, sub, pd.DataFrame())
    assert set(plots) >= {"accuracy_vs_ratio", "accuracy_vs_macs", "per_class_recall"}
    for path in plots.values():
        with Image.open(path) as im:
            im.verify()
    # ... and its report has no section whose figure no arm draws
    from protoprune.study.aggregate import summarize
    from protoprune.study.report import write_report

    cfg = load_study_config(packaged_config("study_protopnet.yaml"))
    html = write_report(tmp_path, cfg, sub, summarize(sub), pd.DataFrame(), []).read_text()
    assert 'id="retention"' not in html and 'id="pruning"' not in html and 'id="cost"' in html


def test_study_resumes_only_the_unfinished_unit(study):
    out, cfg = study["out"], study["cfg"]
    ran_first = [e["unit"] for e in study["first_events"] if e["event"] == "ran"]
    assert len(ran_first) == len(ARMS) * len(SEEDS)
    markers = sorted((out / "runs").glob("*/seed*/*/done.json"))
    assert len(markers) == len(ran_first)
    before = {p: p.stat().st_mtime_ns for p in markers}
    target = out / "runs" / "resnet18" / "seed1" / "filter-weight"
    (target / "done.json").unlink()
    old = pd.read_csv(out / "results" / "per_seed.csv")

    per_seed = run_study(cfg, out, progress=False)  # resume is the default

    log = StudyLog(out)
    events = log.events()
    last = [e for e in events if e["invocation"] == events[-1]["invocation"]]
    assert [e["unit"] for e in last if e["event"] == "ran"] == ["resnet18/seed1/filter-weight"]
    assert len([e for e in last if e["event"] == "skipped"]) == len(ran_first) - 1
    for p, mtime in before.items():
        if p.parent != target:
            assert p.stat().st_mtime_ns == mtime, f"{p} was rewritten"
    assert json.loads((target / "done.json").read_text())["unit"] == "resnet18/seed1/filter-weight"
    # the interrupted attempt's folder was kept aside, not deleted
    assert (target.parent / "filter-weight.old-1").is_dir()
    # every other unit's numbers are carried over unchanged
    keep = old["unit"] != "resnet18/seed1/filter-weight"
    new = per_seed.set_index("unit").loc[old.loc[keep, "unit"]]
    assert np.allclose(
        new["test_accuracy"].astype(float), old.loc[keep, "test_accuracy"], equal_nan=True
    )


def test_force_keeps_the_old_study_folder_aside(tmp_path, monkeypatch):
    from protoprune.study import runner

    out = tmp_path / "study"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "marker.txt").write_text("old results")

    def stop(*_a, **_k):
        raise RuntimeError("stopped after preparing the folder")

    monkeypatch.setattr(runner, "run_units", stop)
    with pytest.raises(RuntimeError, match="stopped"):
        runner.run_study(packaged_config("study_quick.yaml"), out, force=True, progress=False)
    assert (tmp_path / "study.old-1" / "runs" / "marker.txt").read_text() == "old results"
    assert not (out / "runs").exists()


def test_study_config_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_study_config(packaged_config("study_quick.yaml"), ["seed=[0]"])
    assert "seeds" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_study_config(packaged_config("study_quick.yaml"), ["arms=[baseline,protopnets]"])
    assert "protopnet" in e.value.fix
    with pytest.raises(ConfigError):
        load_study_config(packaged_config("study_quick.yaml"), ["run.train.epoch=2"])
    full = load_study_config(packaged_config("study_full.yaml"))
    assert (
        full.seeds == [0, 1, 2] and full.external_test and full.run["data"]["dataset"] == "medmnist"
    )
    assert load_study_config(packaged_config("study_quick.yaml")).seeds == [0, 1, 2]


def test_one_colour_per_arm_in_every_figure(tmp_path, monkeypatch):
    """Each arm keeps its colour from figure to figure (it changed with the arms a figure held),
    and no two arms share one."""
    from pathlib import Path

    import matplotlib.colors as mcolors

    import protoprune.study.plots as plots

    arms = [("baseline", ""), ("filter", "lrp"), ("filter", "weight"), ("protopnet", ""),
            ("protopnet_pruned", "")]  # fmt: skip
    per_seed = pd.DataFrame([
        {"status": "ok", "arch": "resnet18", "arm": a, "method": m, "seed": s, "macs": 5e6 * (i + 1),
         "test_accuracy": 0.5 + 0.01 * i, "latency_ms_b1": 1.0 + i, "recall_mel": 0.4, "recall_nv": 0.9}
        for i, (a, m) in enumerate(arms) for s in (0, 1)
    ])  # fmt: skip
    curves = pd.DataFrame([
        {"arch": "resnet18", "arm": "filter", "method": m, "seed": s, "step": k,
         "pruned_ratio": 0.15 * k, "macs": 5e6 * (1 - 0.15 * k), "test_accuracy": 0.6 - 0.01 * k,
         "test_accuracy_pruned": 0.5, "test_balanced_accuracy": 0.5,
         "test_balanced_accuracy_pruned": 0.4}
        for m in ("weight", "lrp") for s in (0, 1) for k in range(3)  # lrp second: order changes
    ])  # fmt: skip
    figures = {}

    def keep(fig, path):
        figures[Path(path).stem] = fig
        return Path(path)

    monkeypatch.setattr(plots, "_save", keep)
    plots.write_plots(tmp_path, per_seed, curves)
    seen: dict[str, set[str]] = {}
    for fig in figures.values():
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                artist = getattr(handle, "lines", None)
                artist = artist[0] if artist else getattr(handle, "patches", [handle])[0]
                colour = artist.get_color() if hasattr(artist, "get_color") else artist.get_facecolor()
                arm = label.split(": ", 1)[-1]
                seen.setdefault(arm, set()).add(mcolors.to_hex(colour))
    assert {"Filter pruning (lrp)", "Baseline CNN", "ProtoPNet"} <= set(seen)
    assert all(len(c) == 1 for c in seen.values()), seen  # one colour per arm everywhere
    colours = [next(iter(c)) for c in seen.values()]
    assert len(set(colours)) == len(colours)  # and no two arms alike
    assert len(figures) == 6


def test_a_difference_keeps_its_sign_its_spread_has_none():
    """"+0.057 ± +0.031" read as if the spread had a direction: the std is printed unsigned."""
    from protoprune.study.aggregate import _pm, table_cells

    row = pd.Series({"delta_accuracy_mean": 0.057, "delta_accuracy_std": 0.031})
    assert _pm(row, "delta_accuracy", 1.0, "+.3f") == "+0.057 ± 0.031"
    row = pd.Series({"delta_accuracy_mean": -0.0121, "delta_accuracy_std": 0.0})
    assert _pm(row, "delta_accuracy", 1.0, "+.3f") == "-0.012 ± 0.000"
    summary = pd.DataFrame([{"arch": "resnet18", "arm": "filter", "method": "lrp", "n_seeds": 2,
                             "status": "ok", "delta_accuracy_mean": 0.057,
                             "delta_accuracy_std": 0.031}])  # fmt: skip
    head, body = table_cells(summary)
    assert body[0][head.index("Δ acc. vs baseline")] == "+0.057 ± 0.031"
