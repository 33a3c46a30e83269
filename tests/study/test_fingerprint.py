"""Legacy compatibility of study fingerprints: a new setting at its old behaviour must not make an
existing study folder rerun its units (hours of work on CPU)."""

from __future__ import annotations

from pathlib import Path

from protoprune.study.config import load_study_config
from protoprune.study.units import Unit, fingerprint, unit_config

# computed with protoprune before protopnet.trunk_epochs and train.channels_last existed
# (commit fe92975)
KNOWN = {
    "baseline": "fbf61ceaa4c71b70e591d1e70dade602d4688e35c7f126f2b5d7b40a1362b8ec",
    "protopnet": "8655b426fa81841de77301ee7e8018aa36e331f7ba2401acf39b39d81e36bd60",
    "protopnet_pruned": "0ac70074c6afe71f0d776937d2ac4eaa3f9f19c1fe9f8da7faa9de8302cc735e",
}


LEGACY = Path(__file__).with_name("legacy_study_full.yaml")  # the study those folders ran


def _fingerprint(kind: str, overrides: list[str] | None = None) -> str:
    study = load_study_config(LEGACY, overrides or [])
    unit = Unit("resnet18", 0, kind)
    return fingerprint(study, unit, unit_config(study, unit, Path("/unused")), {})


def test_fingerprints_of_an_older_version_still_match() -> None:
    for kind, known in KNOWN.items():
        assert _fingerprint(kind) == known, kind


def test_a_new_setting_away_from_its_old_behaviour_changes_the_fingerprint() -> None:
    changed = _fingerprint("protopnet", ["run.protopnet.trunk_epochs=2"])
    assert changed != KNOWN["protopnet"]
    # and only for the units that read the section
    assert _fingerprint("baseline", ["run.protopnet.trunk_epochs=2"]) == KNOWN["baseline"]


def test_channels_last_reruns_every_unit_only_when_on() -> None:
    # it changes results in the last bits (other convolution kernels), so it is part of the hash
    for kind, known in KNOWN.items():
        assert _fingerprint(kind, ["run.train.channels_last=false"]) == known, kind
        assert _fingerprint(kind, ["run.train.channels_last=true"]) != known, kind


def test_joint_lr_timing_reruns_protopnet_units_only_where_it_changes_the_schedule() -> None:
    # the legacy study pins the old timing ("end"), so its folders resume; the original's ("start")
    # reruns its ProtoPNet units: 5 joint epochs reach the StepLR step of 5
    assert _fingerprint("protopnet", ["run.protopnet.joint_lr_step_at=end"]) == KNOWN["protopnet"]
    assert _fingerprint("protopnet", ["run.protopnet.joint_lr_step_at=start"]) != KNOWN["protopnet"]
    assert _fingerprint("baseline", ["run.protopnet.joint_lr_step_at=start"]) == KNOWN["baseline"]
    # with fewer joint epochs than the step size the timing changes nothing: same fingerprint
    short = ["run.protopnet.joint_epochs=4"]
    assert _fingerprint("protopnet", [*short, "run.protopnet.joint_lr_step_at=start"]) == (
        _fingerprint("protopnet", [*short, "run.protopnet.joint_lr_step_at=end"])
    )


def _unit_fingerprint(kind: str, method: str | None, overrides: list[str] | None = None) -> str:
    study = load_study_config(LEGACY, overrides or [])
    unit = Unit("resnet18", 0, kind, method)
    return fingerprint(study, unit, unit_config(study, unit, Path("/unused")), {})


def test_pruning_departure_options_rerun_only_where_they_change_a_result() -> None:
    weight = _unit_fingerprint("filter", "weight")
    # the old behaviour of each new setting leaves the hash as it was
    for old in ("run.prune_filters.lrp_batchnorm=eval", "run.prune_filters.schedule=cumulative"):
        assert _unit_fingerprint("filter", "weight", [old]) == weight, old
    assert _unit_fingerprint("filter", "weight", ["run.prune_filters.lrp_batchnorm=train"]) != weight
    assert _unit_fingerprint("filter", "weight", ["run.prune_filters.schedule=reference"]) != weight
    # a ResNet has no hidden Linear layer: prune_linear cannot change its units
    assert _unit_fingerprint("filter", "weight", ["run.prune_filters.prune_linear=true"]) == weight
    assert _unit_fingerprint("baseline", None) == KNOWN["baseline"]


def test_units_of_the_random_control_carry_its_version(monkeypatch) -> None:
    """A new version of the random control reruns the units that use it, and only those."""
    from protoprune.study import units

    study = load_study_config(LEGACY, [])
    cases = [("filter", "random"), ("filter", "lrp"), ("curve", None)]
    before = [_unit_fingerprint(kind, method) for kind, method in cases]
    monkeypatch.setattr(units, "RANDOM_CONTROL", "another-version")
    after = [_unit_fingerprint(kind, method) for kind, method in cases]
    assert before[0] != after[0] and before[1] == after[1]
    assert (before[2] != after[2]) == ("random" in study.criteria)


def test_the_ham10000_study_config_still_matches_its_kept_units(monkeypatch) -> None:
    """configs/study_ham10000.yaml as committed fingerprints each kept unit of studies/ham10000
    as it was run (with the data folder that run used): an edit that would retrain them fails."""
    import json

    import yaml

    from protoprune.study.units import plan_units, unit_dir

    repo = Path(__file__).resolve().parents[2]
    kept = repo / "studies" / "ham10000"
    run_root = yaml.safe_load((kept / "runs/resnet18/seed1/baseline/config.yaml").read_text())["data"]["root"]
    monkeypatch.setenv("PROTOPRUNE_DATA", str(Path(run_root).parent))
    study = load_study_config(repo / "configs" / "study_ham10000.yaml")
    ids, checked = {}, 0
    for unit in plan_units(study):
        done = unit_dir(kept, unit) / "done.json"
        if unit.seed != 1 or not done.is_file():  # seed 1: all its units ran at one commit
            continue
        record = json.loads(done.read_text())
        cfg = unit_config(study, unit, kept)
        assert fingerprint(study, unit, cfg, {d.key: ids.get(d.key, "") for d in unit.deps()}) == record["fingerprint"], unit.key
        ids[unit.key], checked = record["run_id"], checked + 1
    assert checked >= 2
