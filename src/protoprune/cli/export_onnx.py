"""`protoprune export-onnx CHECKPOINT`: an ONNX file of a saved model, run by onnxruntime."""

from __future__ import annotations

import argparse
import json

NAME = "export-onnx"
HELP = "export a saved model (checkpoint, run folder or pruned step_XX.pt) to ONNX, checked by onnxruntime"
EXAMPLE = "protoprune export-onnx runs/<name>/checkpoints/best.pt"  # shown in the fix when a required argument is missing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint .pt, its run folder, or a pruned step_XX.pt")
    parser.add_argument("--out", help="the .onnx file (default: the checkpoint's path with .onnx)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")


def execute(args: argparse.Namespace) -> int:
    from ..prune.onnx_export import export_checkpoint_onnx

    result = export_checkpoint_onnx(args.checkpoint, args.out, args.force)
    print(json.dumps({k: str(v) if k == "path" else v for k, v in result.items()}, indent=2))
    return 0
