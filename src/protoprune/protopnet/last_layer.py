"""ProtoPNet's last-layer stage: convex optimisation of the last layer on cached similarity vectors.

The features are frozen in this stage, so the (N, P) vectors the original recomputes every batch
are computed once (by the push) and the stage is hundreds of small steps on them. At the paper's
2000 prototypes x 200 classes each step is two (batch x 2000) x (2000 x 200) products and an Adam
update of 400 k weights, so everything else a step does (autograd's graph, fresh tensors,
Optimizer.step's bookkeeping, extra passes over the weight) is written out of the loop here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch.optim.adam import adam

from ..config import ProtoPNetConfig
from ..progress import tqdm
from .model import ProtoPNet


def _adam_step(
    optimizer: torch.optim.Optimizer, weight: torch.Tensor
) -> tuple[Callable[[], None], bool]:
    """`optimizer.step` for the stage's one weight (call it under no_grad), and whether a CUDA
    graph can replay it.

    For torch's Adam holding only that weight: torch's functional Adam (the same kernel, `fused`
    as configured) on the optimiser's own state tensors, so the update, `state_dict` and a resume
    are unchanged, without Optimizer.step's per-call bookkeeping (hooks, `_init_group`, grouping
    tensors by device), which was 65 ms of the 0.8 s stage at 2000 x 200 on 2 cores. The first
    step, which creates the state, and any other optimiser go through `optimizer.step`. The fused
    and capturable kernels keep the step count on the device and never read it back, so a CUDA
    graph can replay them. On a column-major weight (see `_column_major`) it steps the
    transposes, which are contiguous: the fused CPU kernel copies non-contiguous tensors (375 us
    a step instead of 101 us at 2000 x 200)."""
    if not _plain_adam(optimizer, weight):
        return optimizer.step, False
    group = optimizer.param_groups[0]
    view = torch.t if weight.t().is_contiguous() else (lambda t: t)

    def step() -> None:
        state = optimizer.state.get(weight)
        if not state:
            optimizer.step()
            return
        beta1, beta2 = group["betas"]
        adam(
            [view(weight)],
            [view(weight.grad)],
            [view(state["exp_avg"])],
            [view(state["exp_avg_sq"])],
            [view(state["max_exp_avg_sq"])] if group["amsgrad"] else [],
            [state["step"]],
            foreach=group["foreach"],
            capturable=group["capturable"],
            fused=group["fused"],
            decoupled_weight_decay=group.get("decoupled_weight_decay", False),
            amsgrad=group["amsgrad"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )

    return step, bool(group["fused"] or group["capturable"])


def _plain_adam(optimizer: torch.optim.Optimizer, weight: torch.Tensor) -> bool:
    """Whether `optimizer` is torch's Adam holding only `weight` (so the stage may step it itself)."""
    groups = optimizer.param_groups
    return (
        type(optimizer) is torch.optim.Adam
        and len(groups) == 1
        and len(groups[0]["params"]) == 1
        and groups[0]["params"][0] is weight
        and not groups[0]["differentiable"]
        and not weight.is_complex()
    )


def iteration_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
    class_weights: torch.Tensor | None,
) -> torch.Tensor:
    """Mean over an iteration's rows of F.cross_entropy(logits, targets, weight=class_weights)
    taken batch by batch (consecutive `batch_size` rows), as the steps saw them: each batch's
    weighted mean, the batches weighted by their length."""
    if logits.t().is_contiguous():  # the stage's (classes, N) buffer: softmax along its rows
        logp = logits.t().float().log_softmax(0).t()  # (a tenth of the time on 2000 x 200)
    else:
        logp = logits.float().log_softmax(1)
    nll = logp.gather(1, targets[:, None]).squeeze(1).neg_()
    n = len(targets)
    batch = torch.arange(n, device=logits.device) // batch_size
    w = torch.ones_like(nll) if class_weights is None else class_weights[targets].to(nll.dtype)
    batches = -(-n // batch_size)
    batch_sum = torch.zeros(batches, device=logits.device).index_add_(0, batch, w * nll)
    batch_w = torch.zeros_like(batch_sum).index_add_(0, batch, w)
    batch_len = torch.bincount(batch, minlength=batches).to(nll.dtype)
    return (batch_sum / batch_w * batch_len).sum() / n


@contextmanager
def _column_major(weight: torch.Tensor, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Lays the (classes, P) weight and its optimiser state out column-major (their transposes
    contiguous) for the stage, then copies the values back into the original tensors, so the
    module, the optimiser and anything holding them see the result in their usual layout.

    On CPU, MKL's float32 gradient product is faster into a column-major weight's layout: at
    2000 x 200, batch 64, 2 threads, it took 287-320 us as the (P, classes) x^T dlogits^T against
    342-380 us (addmm_) or 572-578 us (mm) into a row-major (classes, P) one; the forward W x^T
    took the same either way (296-301 us). Adam is elementwise, so its state only has to share
    the weight's layout (and is stepped on the contiguous transposes, see `_adam_step`)."""
    originals = {"weight": weight.data}
    state = optimizer.state.get(weight, {})
    originals.update({k: v for k, v in state.items() if _weight_shaped(v, weight)})
    weight.data = weight.data.t().contiguous().t()
    for k in originals.keys() - {"weight"}:
        state[k] = state[k].t().contiguous().t()
    try:
        yield
    finally:
        originals["weight"].copy_(weight.data)
        weight.data = originals["weight"]
        state = optimizer.state.get(weight, {})
        for k, v in list(state.items()):
            if k in originals:
                state[k] = originals[k].copy_(v)
            elif _weight_shaped(v, weight):  # state the stage's first step created
                state[k] = v.contiguous()


def _weight_shaped(value: object, weight: torch.Tensor) -> bool:
    return torch.is_tensor(value) and value.shape == weight.shape


@torch.no_grad()
def last_layer_stage(
    model: ProtoPNet,
    similarities: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    p: ProtoPNetConfig,
    batch_size: int,
    class_weights: torch.Tensor | None = None,
    oversample: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = True,
    amp: bool = False,
    cuda_graph: bool | None = None,
) -> list[dict[str, float]]:
    """Optimise only the last layer on cached (N, P) similarity vectors of the push set.

    An iteration is one pass over the vectors in mini-batches. Loss: CE + l1 * L1 on the
    wrong-class weights. `oversample` draws class-balanced batches (as the training loader does).
    `amp` (`train.cpu_amp`, on CPU only): the two products of each step in bfloat16, as autocast
    runs a linear layer (float32 weights, Adam state, softmax and loss); on CUDA it is ignored.
    `cuda_graph` (default: on CUDA with a fused or capturable Adam): after the first iteration,
    the full batches of an iteration are replayed as one CUDA graph; the same kernels on the same
    buffers, so the same result, without a Python round and the kernel launches of each step.
    Memory: one more (N, P) buffer (this iteration's vectors in drawn order) and a (classes, N) one.
    """
    model.set_trainable(features=False, add_on=False, prototypes=False, last_layer=True)
    weight = model.last_layer.weight
    weight.grad = None
    # column-major for the float32 products on CPU; the bfloat16 ones were faster row-major (the
    # gradient product 158 us against 178 us); cuBLAS takes either
    relayout = similarities.device.type == "cpu" and not amp and _plain_adam(optimizer, weight)
    with _column_major(weight, optimizer) if relayout else nullcontext():
        rows = _optimise(model, similarities, targets, optimizer, p, batch_size, class_weights,
                         oversample, generator, progress, amp, cuda_graph)  # fmt: skip
    weight.grad = None  # the stage's buffer, in the stage's layout
    return rows


def _optimise(
    model: ProtoPNet,
    similarities: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    p: ProtoPNetConfig,
    batch_size: int,
    class_weights: torch.Tensor | None,
    oversample: bool,
    generator: torch.Generator | None,
    progress: bool,
    amp: bool,
    cuda_graph: bool | None,
) -> list[dict[str, float]]:
    """last_layer_stage's loop, on the weight in whichever layout it has."""
    device, n = similarities.device, len(targets)
    if oversample:
        counts = torch.bincount(targets, minlength=model.num_classes).float()
        draw = (1.0 / counts.clamp_min(1))[targets].cpu().double()
    steps = _Steps(model, similarities, targets, optimizer, p, batch_size, class_weights, amp)
    full = [s for s in steps.starts if s + batch_size <= n]
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs the similarity vectors on CUDA, not {device}")
    if cuda_graph is None:
        cuda_graph = device.type == "cuda" and steps.graph_safe and len(full) > 1
    graph = None
    rows = []
    for it in tqdm(range(p.last_layer_iterations), desc="last layer", leave=False, disable=not progress):
        if oversample:
            draws = torch.multinomial(draw, n, replacement=True, generator=generator)
        else:
            draws = torch.randperm(n, generator=generator)
        steps.gather(draws)
        if graph is None:
            for start in steps.starts:
                steps.batch_step(start)
            if cuda_graph and it + 1 < p.last_layer_iterations:
                # captured after an eager iteration (lazy initialisations and the optimiser's
                # state happen outside the capture); capturing runs nothing
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    for start in full:
                        steps.batch_step(start)
        else:
            graph.replay()
            for start in steps.starts[len(full) :]:  # the short last batch
                steps.batch_step(start)
        rows.append({"iteration": it + 1, **steps.iteration_summary()})
    return rows


class _Steps:
    """The buffers and the hand-written step of the last-layer loop (see `_optimise`).

    The gradient is written by hand, not by autograd: autograd's graph and its fresh gradient
    tensor each step cost a fifth of the stage (2000 x 200, 2 threads: 1.55 s by hand, 1.91 s
    with autograd). For logits = x W^T (no bias) and a batch of m rows:
      dCE/dW = ((softmax - onehot) * w_y / sum(w_y))^T x   (w_y = 1/m without class weights)
      d(l1 |W * wrong|)/dW = l1 sign(W) wrong,
    the same update as autograd (tests/protopnet/test_last_layer_gradient.py checks it). It takes
    three passes over the weight's size: sign(W) into the gradient, zeros at the own-class
    entries, and the product's accumulation with beta = l1 (so no separate scaling pass).

    Each iteration gathers the vectors and targets in drawn order once, so a step's batch is a
    contiguous view, and each step writes its logits into a (classes, N) buffer: the loss and
    accuracy of the iteration come from it in one pass at the end, not a dozen small ops a
    step. All buffers are made once: a fresh (batch x P) tensor is 512 KB at 2000 prototypes,
    which glibc may map and unmap every step (640 steps at 2000 x 200, 2 threads: 1.5 s
    instead of 0.72 s). The logits and their gradient are (classes, batch), W x^T: the
    bfloat16 product was 147 us that way against 182 us as x W^T (2000 x 200, batch 64).
    """

    def __init__(self, model: ProtoPNet, similarities: torch.Tensor, targets: torch.Tensor,
                 optimizer: torch.optim.Optimizer, p: ProtoPNetConfig, batch_size: int,
                 class_weights: torch.Tensor | None, amp: bool) -> None:  # fmt: skip
        device, n = similarities.device, len(targets)
        self.p, self.batch_size, self.class_weights, self.n = p, batch_size, class_weights, n
        self.targets = targets
        self.weight = weight = model.last_layer.weight
        self.wrong = 1 - model.prototype_class_identity.t()
        column_major = weight.t().is_contiguous()  # see _column_major
        # flat indices (in memory order) of the own-class weights, which the L1 term leaves alone
        own_mask = (self.wrong.t() if column_major else self.wrong) == 0
        self.own = own_mask.reshape(-1).nonzero().squeeze(1).to(weight.device)
        self.grad = torch.zeros_like(weight)  # in the weight's layout
        weight.grad = self.grad  # written in place each step; the optimiser reads it from here
        self.grad_t = self.grad.t()
        self.grad_flat = (self.grad_t if column_major else self.grad).view(-1)
        self.step, self.graph_safe = _adam_step(optimizer, weight)
        # bfloat16 products: the vectors are converted once, the weight once a step (on 2 cores
        # with AVX512-BF16 the two products took 0.24 s instead of 0.42-0.46 s at 2000 x 200)
        self.low = low = torch.bfloat16 if amp and device.type == "cpu" else None
        self.source = similarities if low is None else similarities.to(low)
        if low is not None:
            self.weight_low = torch.empty_like(weight, dtype=low)
            self.grad_low = torch.empty_like(weight, dtype=low)
            self.dlogits_low = torch.empty((weight.shape[0], min(batch_size, n)), dtype=low, device=device)
        self.x_drawn = torch.empty_like(self.source)
        self.y_drawn = torch.empty_like(targets)
        self.logits_drawn = self.source.new_empty((weight.shape[0], n))
        self.minus_ones = torch.full((1, min(batch_size, n)), -1.0, device=device)
        if class_weights is not None:
            self.row_scale = torch.empty((1, n), device=device)  # w_y / sum of the batch's w_y
            self.batch_of_row = torch.arange(n, device=device) // batch_size
        self.order = torch.empty(n, dtype=torch.long, device=device)  # this iteration's draw
        self.starts = range(0, n, batch_size)

    def gather(self, draws: torch.Tensor) -> None:
        """This iteration's vectors and targets in drawn order (and the batches' class weights)."""
        self.order.copy_(draws)
        torch.index_select(self.source, 0, self.order, out=self.x_drawn)
        torch.index_select(self.targets, 0, self.order, out=self.y_drawn)
        if self.class_weights is not None:
            w = self.class_weights[self.y_drawn]
            batch_total = torch.zeros(len(self.starts), device=w.device).index_add_(0, self.batch_of_row, w)
            torch.div(w, batch_total[self.batch_of_row], out=self.row_scale[0])

    def batch_step(self, start: int) -> None:
        p, weight, grad = self.p, self.weight, self.grad
        end = min(start + self.batch_size, self.n)
        m = end - start
        x, y = self.x_drawn[start:end], self.y_drawn[None, start:end]
        if self.low is None:
            logits = torch.mm(weight, x.t(), out=self.logits_drawn[:, start:end])
        else:
            self.weight_low.copy_(weight)
            logits = torch.mm(self.weight_low, x.t(), out=self.logits_drawn[:, start:end])
        dlogits = torch.softmax(logits, 0, dtype=torch.float32)  # (classes, batch)
        dlogits.scatter_add_(0, y, self.minus_ones[:, :m])
        scale = p.crs_ent / m
        if self.class_weights is not None:
            dlogits.mul_(self.row_scale[:, start:end])
            scale = p.crs_ent
        torch.sign(weight, out=grad)
        self.grad_flat.index_fill_(0, self.own, 0.0)
        if self.low is None:
            self.grad_t.addmm_(x.t(), dlogits.t(), beta=p.l1, alpha=scale)
        else:  # grad = scale * dCE/dW (bfloat16 product) + l1 * sign(W) * wrong
            torch.mul(dlogits, scale, out=self.dlogits_low[:, :m])
            torch.mm(self.dlogits_low[:, :m], x, out=self.grad_low)
            torch.add(self.grad_low, grad, alpha=p.l1, out=grad)
        self.step()

    def iteration_summary(self) -> dict[str, float]:
        """Loss: mean cross-entropy of the batches as drawn plus the L1 term at the iteration's
        end; accuracy of the batches as drawn (as the original reports it): no extra pass."""
        ce = iteration_loss(self.logits_drawn.t(), self.y_drawn, self.batch_size, self.class_weights)
        l1 = (self.weight * self.wrong).abs().sum()
        # max's indices are argmax's (the first maximum), in a third of argmax's time here
        correct = (self.logits_drawn.max(0).indices == self.y_drawn).float().mean()
        return {"loss": (self.p.crs_ent * ce + self.p.l1 * l1).item(), "train_accuracy": correct.item()}

