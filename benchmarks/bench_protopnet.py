#!/usr/bin/env python3
"""Throughput of protoprune's ProtoPNet beside the ORIGINAL implementation, same sizes, same run.

Measures, for each scale, protoprune's joint epoch, push (with the rendering of every prototype's
images: in a background thread, as training runs it, and waited for, as `protoprune push` runs
it), the cached last-layer stage, test inference and one no-grad forward pass over the push
set (the floor any push must pay), then runs the peer script `peer_protopnet.py` (which times the
original ProtoPNet code, unedited, from the `protopnet_original/` folder beside it) on the same
sizes in a subprocess and reports the ratios. Give its location with `--peer PATH` or the
environment variable PROTOPRUNE_PEER_BENCH, or pass `--skip-peer` to time protoprune alone.

Scales: small (7 classes x 10 prototypes, 700 train images) and paper (200 classes x 10 = 2000
prototypes, 2000 train images); resnet18, 64 px, batch 64, 2 threads. The data is the peer's
synthetic deterministic images, held as tensors by both. For parity with the original's
ResNet18 (7x7 stride-2 stem + max-pool), protoprune's trunk is built with small_input=False.
`--device cuda` runs both on the GPU (the original calls .cuda() itself when one is there).

    python benchmarks/bench_protopnet.py --peer PATH/peer_protopnet.py --repeats 1 \
        --out results/bench_protopnet.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER_ENV = "PROTOPRUNE_PEER_BENCH"
SCALES = {
    "small": {"n_classes": 7, "protos_per_class": 10, "n_train": 700, "n_test": 350},
    "paper": {"n_classes": 200, "protos_per_class": 10, "n_train": 2000, "n_test": 350},
    "tiny": {"n_classes": 3, "protos_per_class": 2, "n_train": 48, "n_test": 24},  # smoke test only
}
TARGETS = {
    "push_over_forward": 1.15,
    "joint_speedup": 1.2,
    "last_layer_speedup": 10.0,
    "push_speedup_paper": 3.0,
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scales", default="small,paper", help="comma-separated: small, paper")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--device", default="cpu", help="cpu or cuda (the original then runs on the GPU too)"
    )
    p.add_argument("--repeats", type=int, default=3, help="median of this many timings per phase")
    p.add_argument("--skip-peer", action="store_true", help="time protoprune only (no ratios)")
    p.add_argument(
        "--peer",
        default=os.environ.get(PEER_ENV),
        help=f"peer_protopnet.py, beside the original ProtoPNet's protopnet_original/ (default: ${PEER_ENV})",
    )
    p.add_argument("--out", default="results/bench_protopnet.json")
    args = p.parse_args()
    if not args.skip_peer and not (args.peer and Path(args.peer).is_file()):
        problem = (
            f"the peer script {args.peer} does not exist"
            if args.peer
            else "the location of the original ProtoPNet's peer script is not given"
        )
        p.exit(
            2,
            f"error: {problem}\n  fix: pass --peer PATH/peer_protopnet.py (or set {PEER_ENV}), "
            "or --skip-peer to time protoprune alone\n",
        )
    return args


ARGS = parse_args()
PEER = Path(ARGS.peer) if ARGS.peer else None
os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))
os.environ.setdefault("MKL_NUM_THREADS", str(ARGS.threads))
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from protoprune.config import ProtoPNetConfig  # noqa: E402
from protoprune.io import atomic_write_json  # noqa: E402
from protoprune.models.backbones import build_classifier, feature_extractor  # noqa: E402
from protoprune.protopnet.model import ProtoPNet  # noqa: E402
from protoprune.protopnet.push import push_prototypes  # noqa: E402
from protoprune.protopnet.training import (  # noqa: E402
    build_optimizers,
    last_layer_stage,
    similarity_vectors,
    train_epoch,
)
from protoprune.train.precision import cpu_has_native_bf16  # noqa: E402

torch.set_num_threads(ARGS.threads)
DEVICE = torch.device(ARGS.device)
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # the original's preprocess.py


def make_images(n: int, n_classes: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The peer's synthetic images (same generator, same seed): noise plus a per-class tint."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), int(np.ceil(n / n_classes)))[:n]
    tints = rng.integers(0, 256, size=(n_classes, 3))
    noise = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.int64)
    imgs = (0.6 * noise + 0.4 * tints[labels][:, None, None, :]).astype(np.uint8)
    return imgs, labels.astype(np.int64)


def tensors(imgs: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def sync() -> None:
    if DEVICE.type == "cuda":  # kernels run asynchronously: time them to their end
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "seconds_all": times}


def bench_protoprune(scale: dict, seed: int = 0) -> dict:
    n_classes, ppc = scale["n_classes"], scale["protos_per_class"]
    tr_imgs, tr_lab = make_images(scale["n_train"], n_classes, ARGS.img_size, seed)
    te_imgs, te_lab = make_images(scale["n_test"], n_classes, ARGS.img_size, seed + 1)
    train_ds = TensorDataset(tensors(tr_imgs), torch.from_numpy(tr_lab))
    test_ds = TensorDataset(tensors(te_imgs), torch.from_numpy(te_lab))
    train = DataLoader(
        train_ds, batch_size=ARGS.batch, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    push = DataLoader(train_ds, batch_size=ARGS.batch, shuffle=False)
    test = DataLoader(test_ds, batch_size=ARGS.batch, shuffle=False)
    class_names = [f"class_{c:03d}" for c in range(n_classes)]

    torch.manual_seed(seed)
    p = ProtoPNetConfig(prototypes_per_class=ppc)
    trunk = feature_extractor(build_classifier(ARGS.arch, n_classes, small_input=False))
    model = ProtoPNet(
        trunk, n_classes, ppc, p.prototype_dim, p.prototype_size, p.add_on, p.similarity, p.epsilon
    )
    model.to(DEVICE)
    opt = build_optimizers(model, p)
    device = DEVICE
    xb, yb = next(iter(train))  # warm-up, not timed
    model.train()
    torch.nn.functional.cross_entropy(model(xb.to(device)), yb.to(device)).backward()
    model.zero_grad(set_to_none=True)

    res = {}
    model.set_trainable(features=True, add_on=True, prototypes=True, last_layer=False)
    res["joint_epoch"] = timed(
        lambda: train_epoch(model, train, opt["joint"], p, device, progress=False), ARGS.repeats
    )
    res["joint_epoch"]["images_per_s"] = len(train_ds) / res["joint_epoch"]["seconds"]
    if device.type == "cpu" and cpu_has_native_bf16():  # `train.cpu_amp`: bfloat16 autocast
        res["joint_epoch_bf16"] = timed(
            lambda: train_epoch(model, train, opt["joint"], p, device, progress=False, amp=True),
            ARGS.repeats,
        )
        res["joint_epoch_bf16"]["images_per_s"] = len(train_ds) / res["joint_epoch_bf16"]["seconds"]
    if device.type == "cuda":  # `train.amp`: float16 autocast with loss scaling
        scaler = torch.amp.GradScaler("cuda")
        res["joint_epoch_amp"] = timed(
            lambda: train_epoch(model, train, opt["joint"], p, device, scaler=scaler, progress=False),
            ARGS.repeats,
        )
        res["joint_epoch_amp"]["images_per_s"] = len(train_ds) / res["joint_epoch_amp"]["seconds"]
    # `train.channels_last`: the same epochs with NHWC weights (the batches stay NCHW)
    model.to(memory_format=torch.channels_last)
    mixed = {"joint_epoch_channels_last": {}}
    if "joint_epoch_bf16" in res:
        mixed["joint_epoch_bf16_channels_last"] = {"amp": True}
    if "joint_epoch_amp" in res:
        mixed["joint_epoch_amp_channels_last"] = {"scaler": scaler}
    for key, kwargs in mixed.items():
        res[key] = timed(
            lambda kw=kwargs: train_epoch(
                model, train, opt["joint"], p, device, progress=False, **kw
            ),
            ARGS.repeats,
        )
        res[key]["images_per_s"] = len(train_ds) / res[key]["seconds"]
    model.to(memory_format=torch.contiguous_format)

    @torch.no_grad()
    def forward_all(loader):
        model.eval()
        for x, _ in loader:
            model(x.to(DEVICE))

    res["test"] = timed(lambda: forward_all(test), ARGS.repeats)
    res["test"]["images_per_s"] = len(test_ds) / res["test"]["seconds"]

    state = {k: v.clone() for k, v in model.state_dict().items()}
    tmp = Path(tempfile.mkdtemp(prefix="bench_push_"))
    results = []

    def one_push(render: bool, render_async: bool = False):
        model.load_state_dict(state)  # every repeat pushes the same (unpushed) model
        out = tmp / "prototypes" if render else None
        results.append(
            push_prototypes(
                model, push, device, class_names, out, mean=MEAN, std=STD, progress=False,
                render_async=render_async,
            )
        )  # fmt: skip

    def wait_images():  # the rest of an asynchronous render, after the push returned
        results[-1].wait_rendered()

    # interleaved, so the floor and the push see the same machine load (the CPU may be shared).
    # push: as training runs it (images written by a background thread while training goes on);
    # push_sync: the caller waits for every PNG (the `protoprune push` command)
    runs = {"forward_push_set": [], "push": [], "render_after_return": [], "push_sync": [],
            "push_no_render": []}  # fmt: skip
    for _ in range(ARGS.repeats):
        for key, fn in (("forward_push_set", lambda: forward_all(push)),
                        ("push", lambda: one_push(True, render_async=True)),
                        ("render_after_return", wait_images),
                        ("push_sync", lambda: one_push(True)),
                        ("push_no_render", lambda: one_push(False))):  # fmt: skip
            runs[key].append(timed(fn, 1)["seconds"])
    for key, times in runs.items():
        res[key] = {"seconds": statistics.median(times), "seconds_all": times}
    res["push_over_forward_each_repeat"] = [
        a / b for a, b in zip(runs["push"], runs["forward_push_set"])
    ]
    res["push"]["files_written"] = len(list((tmp / "prototypes").iterdir()))
    res["push"]["timings_last_no_render"] = results[-1].timings
    res["push"]["timings_last_render"] = results[-2].timings
    pushed = results[-1]

    model.set_trainable(features=False, add_on=False, prototypes=False, last_layer=True)
    gen = torch.Generator().manual_seed(seed)

    def stage(amp: bool = False):
        last_layer_stage(
            model,
            pushed.similarities,
            pushed.targets,
            opt["last"],
            p,
            ARGS.batch,
            oversample=True,
            generator=gen,
            progress=False,
            amp=amp,
        )

    res["last_layer_stage"] = timed(stage, ARGS.repeats)  # 20 iterations, vectors from the push
    res["last_layer_stage"]["iterations"] = p.last_layer_iterations
    if device.type == "cpu" and cpu_has_native_bf16():  # `train.cpu_amp`: bfloat16 products
        res["last_layer_stage_bf16"] = timed(lambda: stage(amp=True), ARGS.repeats)

    def stage_with_vectors():  # as when resuming between push and stage: one extra forward
        sims, ys = similarity_vectors(model, push, device)
        last_layer_stage(
            model,
            sims,
            ys,
            opt["last"],
            p,
            ARGS.batch,
            oversample=True,
            generator=gen,
            progress=False,
        )

    res["last_layer_stage_incl_vectors"] = timed(stage_with_vectors, ARGS.repeats)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return res


def run_peer(scale: dict) -> dict | None:
    if ARGS.skip_peer:
        return None
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "peer.json"
        cmd = [
            sys.executable, str(PEER), "--arch", ARGS.arch, "--img-size", str(ARGS.img_size),
            "--n-train", str(scale["n_train"]), "--n-test", str(scale["n_test"]), "--n-classes", str(scale["n_classes"]),
            "--protos-per-class", str(scale["protos_per_class"]), "--batch", str(ARGS.batch),
            "--threads", str(ARGS.threads), "--repeats", str(ARGS.repeats), "--no-extras", "--quiet", "--out", str(out),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=d)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"peer benchmark failed ({proc.returncode})")
        import json

        return json.loads(out.read_text())["results"]


def compare(ours: dict, peer: dict | None) -> dict:
    fwd = ours["forward_push_set"]["seconds"]
    row = {
        "push_s": ours["push"]["seconds"],
        "push_no_render_s": ours["push_no_render"]["seconds"],
        "push_sync_s": ours["push_sync"]["seconds"],
        "render_after_return_s": ours["render_after_return"]["seconds"],
        "forward_push_set_s": fwd,
        "push_over_forward": ours["push"]["seconds"] / fwd,
        "joint_img_s": ours["joint_epoch"]["images_per_s"],
        "joint_bf16_img_s": ours.get("joint_epoch_bf16", {}).get("images_per_s"),
        "joint_amp_img_s": ours.get("joint_epoch_amp", {}).get("images_per_s"),
        "last_layer_stage_s": ours["last_layer_stage"]["seconds"],
        "last_layer_stage_bf16_s": ours.get("last_layer_stage_bf16", {}).get("seconds"),
        "last_layer_stage_incl_vectors_s": ours["last_layer_stage_incl_vectors"]["seconds"],
        "test_img_s": ours["test"]["images_per_s"],
    }
    if peer:
        row.update(
            {
                "peer_push_s": peer["push"]["seconds"],
                "peer_joint_img_s": peer["joint_epoch"]["images_per_s"],
                "peer_last_layer_epoch_s": peer["last_only_epoch"]["seconds"],
                "peer_test_img_s": peer["test"]["images_per_s"],
                "push_speedup": peer["push"]["seconds"] / ours["push"]["seconds"],
                "push_sync_speedup": peer["push"]["seconds"] / ours["push_sync"]["seconds"],
                "joint_speedup": ours["joint_epoch"]["images_per_s"]
                / peer["joint_epoch"]["images_per_s"],
                # our whole 20-iteration stage against ONE of the original's 20 last-layer epochs
                "joint_bf16_speedup": None
                if "joint_epoch_bf16" not in ours
                else ours["joint_epoch_bf16"]["images_per_s"] / peer["joint_epoch"]["images_per_s"],
                "last_layer_speedup": peer["last_only_epoch"]["seconds"]
                / ours["last_layer_stage"]["seconds"],
                "joint_amp_speedup": None
                if "joint_epoch_amp" not in ours
                else ours["joint_epoch_amp"]["images_per_s"] / peer["joint_epoch"]["images_per_s"],
                "last_layer_bf16_speedup": None
                if "last_layer_stage_bf16" not in ours
                else peer["last_only_epoch"]["seconds"] / ours["last_layer_stage_bf16"]["seconds"],
                "last_layer_stage_speedup_vs_20_epochs": 20
                * peer["last_only_epoch"]["seconds"]
                / ours["last_layer_stage"]["seconds"],
                "test_speedup": ours["test"]["images_per_s"] / peer["test"]["images_per_s"],
            }
        )
    for key in CHANNELS_LAST_ROWS:  # `train.channels_last`
        if key in ours:
            row[f"{key}_img_s"] = ours[key]["images_per_s"]
            if peer:
                row[f"{key}_speedup"] = ours[key]["images_per_s"] / peer["joint_epoch"]["images_per_s"]
    return row


CHANNELS_LAST_ROWS = {
    "joint_epoch_channels_last": "joint epoch, channels_last (img/s)",
    "joint_epoch_bf16_channels_last": "  + cpu_amp bf16 (img/s)",
    "joint_epoch_amp_channels_last": "  + CUDA amp fp16 (img/s)",
}


def main() -> None:
    report = {
        "config": vars(ARGS),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "scales": {},
    }
    for name in ARGS.scales.split(","):
        scale = SCALES[name]
        print(f"== {name}: {scale}", flush=True)
        ours = bench_protoprune(scale)
        print("   protoprune done", flush=True)
        peer = run_peer(scale)
        print("   original done" if peer else "   original skipped", flush=True)
        report["scales"][name] = {
            "sizes": scale,
            "protoprune": ours,
            "original": peer,
            "summary": compare(ours, peer),
        }
    report["targets"] = TARGETS
    atomic_write_json(ARGS.out, report)

    print(
        f"\nProtoPNet, {ARGS.arch} {ARGS.img_size}px, batch {ARGS.batch}, {ARGS.threads} threads, "
        f"{report['device']}, median of {ARGS.repeats}"
    )
    header = f"{'scale':6} {'metric':34} {'protoprune':>11} {'original':>11} {'ratio':>8}"
    print(header + "\n" + "-" * len(header))
    for name, r in report["scales"].items():
        s = r["summary"]
        lines = [
            ("push (s, images in background)", s["push_s"], s.get("peer_push_s"), s.get("push_speedup"), "x faster"),
            ("  images done after return (s)", s["render_after_return_s"], None, None, ""),
            ("push waiting for images (s)", s["push_sync_s"], s.get("peer_push_s"), s.get("push_sync_speedup"), "x faster"),
            ("push without rendering (s)", s["push_no_render_s"], None, None, ""),
            ("no-grad forward, push set (s)", s["forward_push_set_s"], None, s["push_over_forward"], "push/fwd"),
            ("joint epoch (img/s)", s["joint_img_s"], s.get("peer_joint_img_s"), s.get("joint_speedup"), "x"),
            ("joint epoch, cpu_amp bf16 (img/s)", s["joint_bf16_img_s"], s.get("peer_joint_img_s"), s.get("joint_bf16_speedup"), "x"),
            ("joint epoch, CUDA amp fp16 (img/s)", s["joint_amp_img_s"], s.get("peer_joint_img_s"), s.get("joint_amp_speedup"), "x"),
            *((label, s.get(f"{key}_img_s"), s.get("peer_joint_img_s"), s.get(f"{key}_speedup"), "x")
              for key, label in CHANNELS_LAST_ROWS.items()),
            ("last-layer stage (s) vs 1 epoch", s["last_layer_stage_s"], s.get("peer_last_layer_epoch_s"), s.get("last_layer_speedup"), "x faster"),
            ("last-layer stage, cpu_amp bf16 (s)", s["last_layer_stage_bf16_s"], s.get("peer_last_layer_epoch_s"), s.get("last_layer_bf16_speedup"), "x faster"),
            ("last-layer stage incl. vectors (s)", s["last_layer_stage_incl_vectors_s"], None, None, ""),
            ("test inference (img/s)", s["test_img_s"], s.get("peer_test_img_s"), s.get("test_speedup"), "x"),
        ]  # fmt: skip
        for label, ours, theirs, ratio, unit in lines:
            t = "" if theirs is None else f"{theirs:11.2f}"
            q = "" if ratio is None else f"{ratio:8.2f} {unit}"
            if ours is not None:  # bf16 rows only on a CPU with it, amp rows only on CUDA
                print(f"{name:6} {label:34} {ours:11.2f} {t:>11} {q}")
    print(f"targets: {TARGETS}\nsaved {ARGS.out}")


if __name__ == "__main__":
    main()
