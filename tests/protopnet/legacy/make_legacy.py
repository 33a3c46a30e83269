"""Run with the code of commit 2f38b50 (before protopnet/ existed): a tiny ProtoPNet checkpoint and
its outputs on fixed inputs, for tests/protopnet/test_legacy_checkpoint.py."""
import sys
from pathlib import Path

import torch

from protoprune.config import load_config
from protoprune.models.factory import build_model
from protoprune.train.checkpoint import save_checkpoint

out = Path(sys.argv[1])
torch.manual_seed(0)
cfg = load_config(None, ["model.type=protopnet", "model.arch=resnet18", "protopnet.trunk_layers=1",
                         "protopnet.prototypes_per_class=2", "protopnet.prototype_dim=16",
                         "data.image_size=32", "data.dataset=bundled"])
names = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
model = build_model(cfg, len(names)).eval()
x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    d = model.forward_details(x)
save_checkpoint(out / "protopnet_2f38b50.pt", model, cfg, names, stage="legacy-test")
torch.save({"inputs": x, "logits": d.logits, "distances": d.distances}, out / "protopnet_2f38b50_outputs.pt")
print(type(model).__module__, sum(p.numel() for p in model.parameters()))
