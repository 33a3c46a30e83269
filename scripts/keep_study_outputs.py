"""Copy a study folder's small outputs (metrics, histories, configs, tables, logs; no checkpoints,
no images) into a tracked folder, keeping the layout, so finished units of a study that runs over
several sessions are committed as they finish and the results scripts run on the copy.

Usage: python scripts/keep_study_outputs.py STUDY_DIR KEPT_DIR   (e.g. runs/study-ham10000 studies/ham10000)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEP = {".json", ".jsonl", ".csv", ".md", ".yaml"}
LIMIT = 1 << 20  # bytes: split.csv and the like are kept, model files never match KEEP
SKIP = {"split.csv"}  # the split is rebuilt from the seed (and written by every run anyway)
# the study's tables describe the units of the invocation that wrote them (`--set seeds=[1]`: one
# seed), not the kept study: they are regenerated from the kept units instead
SKIP_FOLDERS = {"results"}
# the study's log is append-only: a run of some seeds (`--set seeds=[1]`, another folder) adds its
# lines to the kept ones; the kept study.yaml describes the whole study and is not replaced by it
MERGED = {"study_log.jsonl"}
KEPT_IF_PRESENT = {"study.yaml"}


def _merge_lines(src: Path, out: Path) -> None:
    old = out.read_text().splitlines() if out.is_file() else []
    seen = set(old)
    new = [line for line in src.read_text().splitlines() if line.strip() and line not in seen]
    out.write_text("\n".join(old + new) + "\n")


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    kept = 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if (not path.is_file() or path.suffix not in KEEP or path.name in SKIP
                or path.stat().st_size > LIMIT or any(".old-" in p for p in rel.parts)
                or rel.parts[0] in SKIP_FOLDERS):  # fmt: skip
            continue
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.name in KEPT_IF_PRESENT and out.is_file():
            continue
        if path.name in MERGED:
            _merge_lines(path, out)
        else:
            shutil.copy2(path, out)
        kept += 1
    print(f"{kept} files kept under {dst}")


if __name__ == "__main__":
    main()
