"""``SGDStep``: one training step (forward, loss, backward, update), set up the way ``fcnseg train`` runs it.

The trainer and the training benchmark both use it, so the benchmark measures exactly the step users get. Under
``torchrun`` the step runs through DistributedDataParallel and its loss is normalised over the global batch (see
:mod:`fcnseg.core.distributed`).
"""

from __future__ import annotations

import torch
from torch import nn

from fcnseg.core.device import autocast, autocast_dtype, memory_format
from fcnseg.core.distributed import World, all_reduce_sum, global_loss, sync_batch_norm, wrap_model

from .config import TrainConfig
from .loss import loss_terms, phased_lovasz
from .optim import lr_factor, make_optimizer, set_lr

__all__ = ["SGDStep"]


class SGDStep:
    """The model on ``device``, the paper's SGD parameter groups, autocast at ``config.precision`` and a grad scaler.

    On the CPU the model and the images are channels_last, where oneDNN convolutions are fastest. The learning rate
    of each step follows ``config``'s schedule; ``lr`` holds the last one used. ``model`` is the model itself (what
    checkpoints save), ``network`` what runs the step: ``model`` in DistributedDataParallel when ``world`` has
    several processes, with SyncBatchNorm where ``config.sync_bn`` asks for it and the GPUs allow it.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        device: torch.device,
        class_weights: torch.Tensor | None = None,
        world: World | None = None,
    ) -> None:
        self.config, self.device, self.class_weights = config, device, class_weights
        self.world = world or World(device=device)
        self.amp = autocast_dtype(config.precision, device)
        if self.amp is torch.float16 and device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device; use bf16 on the CPU")
        self.memory_format = memory_format(device)
        self.model = model.to(device, memory_format=self.memory_format)
        if config.sync_bn:
            self.model = sync_batch_norm(self.model, self.world)
        self.optimizer = make_optimizer(
            self.model,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            input_scale=config.input_scale,
        )
        self.network = wrap_model(self.model, self.world)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp is torch.float16)
        self.lr = config.lr

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, step: int, total: int) -> torch.Tensor:
        """Step number ``step`` of ``total`` on a batch.

        Returns:
            The loss (of the global batch when distributed) as a 0-d tensor on the device, not read back: the
            trainer sums it on the device and reads it once per logged row, so a GPU step has no host sync of its
            own. In fp16 it may be non-finite: the grad scaler then skipped the update (it reads its overflow flag
            anyway), and the trainer counts the skip.

        Raises:
            FloatingPointError: a non-finite loss in fp32/bf16, before any weight is touched. The check reads
                the loss back, which is free on the CPU (computed already) and one sync per step on a GPU.
        """
        c = self.config
        factor = lr_factor(step, total=total, schedule=c.schedule, power=c.poly_power, warmup=c.warmup)
        self.lr = set_lr(self.optimizer, c.lr, factor)
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        masks = masks.to(self.device, non_blocking=True)
        with autocast(self.device, self.amp):
            logits = self.network(images)
        summed, count = loss_terms(logits, masks, class_weights=self.class_weights, hard_fraction=c.hard_fraction)
        loss, value = global_loss(summed, count, mean=c.loss_norm == "mean", world=self.world)
        if c.lovasz:  # each process's term is its own batch's; DDP averages their gradients, the log their values
            term = c.lovasz * phased_lovasz(logits, masks, step)
            loss = loss + term
            value = value + all_reduce_sum(term.detach(), self.world) / self.world.size
        if not self.scaler.is_enabled() and not bool(torch.isfinite(value)):  # same value on every process
            raise FloatingPointError(
                f"the loss became {value.item()} at step {step} (learning rate {self.lr:g}); lower --lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)  # fp16: skipped when the gradients are not finite
        self.scaler.update()
        return value.detach()
