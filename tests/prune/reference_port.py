"""A port of the filter scores of the reference implementation of Yeom et al. (2021).

github seulkiyeom/LRP_pruning: `utils/lrp_general6.py` (the LRP rules of `prune_resnet.py`:
`lrp_params_def1`, `lrp_layer2method`), `modules/resnet_kuangliu.py: copyfromresnet` (BatchNorm
fused into the conv before it, z^B for conv1) and `modules/filterprune.py` (the criteria). The
rules are written out layer by layer here, with the reference's own stabilisers, and applied to
torchvision's VGG and ResNet modules: an independent computation to test protoprune's zennit-based
scores against. Only the tests import it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock


def safe_divide(num, den, eps0, eps):  # lrp_general6.safe_divide
    return num / (den + eps0 * (den == 0).to(den) + eps * den.sign())


def lrp_backward(x, layer, relevance, eps0, eps):  # lrp_general6.lrp_backward
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = layer(x)
    s = safe_divide(relevance.detach(), z.detach(), eps0, eps)
    z.backward(s)
    return x.detach() * x.grad


def fuse(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:  # bnafterconv_overwrite_intoconv
    conv = copy.deepcopy(conv)
    s = (bn.running_var + bn.eps) ** 0.5
    w, b, m = bn.weight, bn.bias, bn.running_mean
    conv.weight = nn.Parameter(conv.weight * (w / s).reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(m)
    conv.bias = nn.Parameter((bias - m) * (w / s) + b)
    return conv


def _conv(conv, x, weight):
    return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def zplus_backward(conv: nn.Conv2d, x, relevance):  # conv2d_beta0_wrapper_fct, bias ignored
    wp, wn = conv.weight.clamp(min=0), conv.weight.clamp(max=0)

    def posneg(v):
        return _conv(conv, v.clamp(min=0), wp) + _conv(conv, v.clamp(max=0), wn)

    return lrp_backward(x, posneg, relevance, 1e-12, 0)


def zbeta_backward(conv: nn.Conv2d, x, relevance, low, high):  # conv2d_zbeta_wrapper_fct
    wp, wn = conv.weight.clamp(min=0), conv.weight.clamp(max=0)
    x = x.detach().clone().requires_grad_(True)
    lo = (low * torch.ones_like(x)).requires_grad_(True)
    hi = (high * torch.ones_like(x)).requires_grad_(True)
    with torch.enable_grad():
        z = _conv(conv, x, conv.weight) - _conv(conv, lo, wp) - _conv(conv, hi, wn)
        s = safe_divide(relevance.detach(), z.detach(), 1e-6, 1e-6)
        z.backward(s)
    return (x * x.grad + lo * lo.grad + hi * hi.grad).detach()


def linear_backward(linear: nn.Linear, x, relevance):  # linearlayer_eps_wrapper_fct, eps 1e-6
    return lrp_backward(x, linear, relevance, 1e-6, 1e-6)


def sum2_backward(a, b, relevance):  # eltwisesum_stacked2_eps_wrapper_fct, eps 1e-6
    r = lrp_backward(torch.stack([a, b]), lambda v: v.sum(0), relevance, 1e-6, 1e-6)
    return r[0], r[1]


def onehot(logits, targets):  # prune_resnet.py: lrp_anchor = output * T / (output * T).sum(1)
    t = torch.zeros_like(logits)
    t[torch.arange(len(targets)), targets] = 1.0
    return logits * t / (logits * t).sum(1, keepdim=True)


@torch.no_grad()
def _scores_from(relevances: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # filterprune.compute_filter_criterion: sum over batch and positions of |R| at the conv output
    return {n: r.abs().sum((0, 2, 3)) for n, r in relevances.items()}


def batch_standardise(z, eps=1e-5):
    """The reference wrapper's reset BatchNorm copy (`resetbn`) in train mode: the fused conv's
    output standardised with the batch's statistics (biased variance, its eps 1e-5); relevance
    passes it unchanged (`relu_wrapper_fct`)."""
    mean = z.mean((0, 2, 3), keepdim=True)
    var = z.var((0, 2, 3), unbiased=False, keepdim=True)
    return (z - mean) / (var + eps).sqrt()


def resnet_lrp_scores(model, x, y, batchnorm: str = "eval") -> dict[str, torch.Tensor]:
    """Reference LRP filter scores of a torchvision (small-input) ResNet with BasicBlocks.

    `batchnorm="train"`: the reference's wrapper as it runs (never put in eval mode), every fused
    conv's output re-standardised over the batch."""
    model = model.eval()
    assert isinstance(model.maxpool, nn.Identity), "the small-input variant (no stem max-pool)"
    norm = batch_standardise if batchnorm == "train" else (lambda z: z)
    named = dict(model.named_modules())
    relevances: dict[str, torch.Tensor] = {}
    stem = fuse(model.conv1, model.bn1)
    h = F.relu(norm(stem(x)))
    trace = []  # (block name, fused convs, input, mid, branch, shortcut)
    for lname in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(named[lname]):
            assert isinstance(block, BasicBlock)
            c1, c2 = fuse(block.conv1, block.bn1), fuse(block.conv2, block.bn2)
            ds = None if block.downsample is None else fuse(*block.downsample)
            mid = F.relu(norm(c1(h)))
            branch = norm(c2(mid))
            short = h if ds is None else norm(ds(h))
            trace.append((f"{lname}.{i}", (c1, c2, ds), h, mid, branch, short))
            h = F.relu(branch + short)
    pooled = torch.flatten(model.avgpool(h), 1)
    logits = model.fc(pooled)
    r = onehot(logits, y)
    r = linear_backward(model.fc, pooled, r).view(h.shape[0], -1, 1, 1)
    r = lrp_backward(h, model.avgpool, r, 1e-6, 1e-6)
    for name, (c1, c2, ds), inp, mid, branch, short in reversed(trace):
        r_branch, r_short = sum2_backward(branch, short, r)
        relevances[f"{name}.conv2"] = r_branch
        r_mid = zplus_backward(c2, mid, r_branch)
        relevances[f"{name}.conv1"] = r_mid
        r_in = zplus_backward(c1, inp, r_mid)
        if ds is not None:
            relevances[f"{name}.downsample.0"] = r_short
            r_short = zplus_backward(ds, inp, r_short)
        r = r_in + r_short
    relevances["conv1"] = r
    return _scores_from(relevances)


def vgg_lrp_scores(model, x, y, low, high, linear: bool = False, inputs: dict | None = None):
    """The same rules on a torchvision VGG with BatchNorm (a plain chain): Conv2d filter scores, as
    the reference counts them (`linear=True` adds the hidden Linear units'); `inputs`, when given,
    receives the input relevance of the z^B rule under "relevance"."""
    model = model.eval()
    layers = []  # (kind, module or fused conv, name, input)
    h = x
    mods = list(model.features.named_children())
    i, first = 0, True
    while i < len(mods):
        name, m = mods[i]
        if isinstance(m, nn.Conv2d):
            bn = mods[i + 1][1]
            conv = fuse(m, bn)
            layers.append(("zbeta" if first else "zplus", conv, f"features.{name}", h))
            first = False
            h = conv(h)
            i += 2
            continue
        if isinstance(m, nn.MaxPool2d):
            layers.append(("maxpool", m, name, h))
        h = m(h)  # ReLU, Identity: relevance passes
        i += 1
    layers.append(("avgpool", model.avgpool, "avgpool", h))
    h = torch.flatten(model.avgpool(h), 1)
    for name, m in model.classifier.named_children():
        if isinstance(m, nn.Linear):
            layers.append(("linear", m, f"classifier.{name}", h))
        h = m(h)
    r = onehot(h, y)
    relevances = {}
    for kind, m, name, inp in reversed(layers):
        if kind == "linear":
            if linear and name != f"classifier.{len(model.classifier) - 1}":
                relevances[name] = r[:, :, None, None]
            r = linear_backward(m, inp, r)
        elif kind == "avgpool":
            r = lrp_backward(inp, m, r.view(inp.shape[0], -1, 1, 1), 1e-6, 1e-6)
        elif kind == "maxpool":  # maxpool2d_wrapper_fct: the gradient routes R to the maxima
            xi = inp.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                m(xi).backward(r)
            r = xi.grad
        else:
            relevances[name] = r
            r = zplus_backward(m, inp, r) if kind == "zplus" else zbeta_backward(m, inp, r, low, high)
    if inputs is not None:
        inputs["relevance"] = r
    return _scores_from(relevances)


def gradient_scores(model, batches, product: bool, train_mode: bool = False):
    """filterprune.compute_filter_criterion for grad ('grad') and taylor ('ICLR'): per batch
    sum(g) / (B H W) (or of a * g) at every conv's output, added over batches, then |.|."""
    model = copy.deepcopy(model)
    model.train(train_mode)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d,))}
    store: dict[str, dict] = {n: {} for n in convs}
    handles = []
    for n, m in convs.items():
        handles.append(m.register_forward_hook(
            lambda mod, i, o, n=n: store[n].__setitem__("out", o.detach())))  # fmt: skip
        handles.append(m.register_full_backward_hook(
            lambda mod, gi, go, n=n: store[n].__setitem__("grad", go[0].detach())))  # fmt: skip
    ranks: dict[str, torch.Tensor] = {}
    for x, y in batches:
        model.zero_grad()
        xi = x.clone().requires_grad_(True)
        F.cross_entropy(model(xi), y).backward()
        for n in convs:
            a, g = store[n]["out"], store[n]["grad"]
            v = (a * g if product else g).sum((0, 2, 3)) / (a.shape[0] * a.shape[2] * a.shape[3])
            ranks[n] = ranks[n] + v if n in ranks else v
    for h in handles:
        h.remove()
    return {n: v.abs() for n, v in ranks.items()}


def weight_scores(model) -> dict[str, torch.Tensor]:
    """'weight': sum |w| of the BatchNorm-fused conv filter (the LRP wrapper's conv)."""
    named = dict(model.named_modules())
    out = {}
    prev = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            prev = n
        elif isinstance(m, nn.BatchNorm2d) and prev is not None:
            out[prev] = fuse(named[prev], m).weight.detach().abs().sum((1, 2, 3))
            prev = None
    return out
