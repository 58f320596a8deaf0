"""One network from several fine-tunes of the same start: the mean of their weights (a "model soup").

Fine-tunes of one pretrained network that differ only in their seed (shuffling, augmentation, dropout) end in one
basin of the loss, and the mean of their weights reads better than each of them, at the cost of one network at
inference (Wortsman et al. 2022, "Model soups"). On IAM's unseen writers two seeds of the CPU recipe, trained at
once on the 2 cores, gain about a point of CER (README "IAM"). Networks trained from different starts do not share
a basin; their mean reads nothing, which the validation CER of the result shows at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning import Trainer
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.algorithms.ddp_comm_hooks.debugging_hooks import noop_hook

from htr.checkpoint import CheckpointError, read_checkpoint

MUST_AGREE = ("net", "charset", "preprocessing")  # hyperparameters that make two networks the same function family


def average_checkpoints(paths: Sequence[str | Path], output: str | Path) -> Path:
    """Write a checkpoint whose weights are the mean of the checkpoints' weights; the rest is the first one's.

    Integer buffers (batch norm's step counts) are taken from the first checkpoint. The result holds no optimizer
    or loop state: it is for testing, transcribing, registering, or ``--model.init_from``, not for resuming.

    Raises:
        ValueError: fewer than two checkpoints.
        CheckpointError: a checkpoint does not load, or its architecture, charset or preprocessing differ from the
            first one's (named).
    """
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {len(paths)}")
    checkpoints = [read_checkpoint(path) for path in paths]
    first = checkpoints[0]
    for path, checkpoint in zip(paths[1:], checkpoints[1:]):
        _check_compatible(first, checkpoint, paths[0], path)
    states = [checkpoint["state_dict"] for checkpoint in checkpoints]
    averaged = {
        name: torch.stack([state[name] for state in states]).mean(0) if tensor.is_floating_point() else tensor
        for name, tensor in states[0].items()
    }
    keep = ("hyper_parameters", "hparams_name", "pytorch-lightning_version", "epoch", "global_step")
    result = {key: first[key] for key in keep if key in first}
    result |= {"state_dict": averaged, "averaged_from": [str(path) for path in paths]}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result, output)
    return output


def _check_compatible(first: dict[str, Any], other: dict[str, Any], first_path: str | Path, path: str | Path) -> None:
    hparams, other_hparams = first.get("hyper_parameters", {}), other.get("hyper_parameters", {})
    differ = [key for key in MUST_AGREE if hparams.get(key) != other_hparams.get(key)]
    names, other_names = set(first["state_dict"]), set(other["state_dict"])
    if names != other_names:
        differ.append(f"weights ({sorted(names ^ other_names)[:4]})")
    if differ:
        raise CheckpointError(path, f"cannot be averaged with {first_path}: their {', '.join(differ)} differ")


class SoupStrategy(DDPStrategy):
    """DDP whose processes exchange no gradients: each trains its own replica of the network on all the training
    data, and validation, checkpoints and so the registered model see the mean of the replicas' weights.

    One ``htr fit`` thus trains a model soup: with ``trainer.devices: 2`` on a 2-core CPU the two replicas take the
    time of one (a core each). The mean is swapped in from validation until the next training batch, when each
    replica takes its own weights back; after the last epoch the module holds the mean. The replicas differ by
    their ranks' seeds (batch order, augmentation, dropout).
    Needs ``trainer.use_distributed_sampler: false``: a replica reads all the data, not a shard of it.
    """

    def __init__(self, process_group_backend: str | None = None) -> None:
        super().__init__(process_group_backend=process_group_backend, broadcast_buffers=False)  # own batch norm
        self._own_weights: dict[str, torch.Tensor] | None = None

    @property
    def distributed_sampler_kwargs(self) -> None:
        """None: no shards (the datamodules keep their own batching, e.g. by width)."""
        return None

    def setup(self, trainer: Trainer) -> None:
        if trainer._accelerator_connector.use_distributed_sampler:  # no public accessor in Lightning 2.6
            raise ValueError(
                "htr.averaging.SoupStrategy trains each replica on all the data: set "
                "trainer.use_distributed_sampler: false (--trainer.use_distributed_sampler false)"
            )
        torch.manual_seed(torch.initial_seed() + self.global_rank)  # the network is built alike; dropout differs
        super().setup(trainer)

    def configure_ddp(self) -> None:
        super().configure_ddp()
        self.model.register_comm_hook(state=None, hook=noop_hook)  # each replica keeps its own gradients

    def on_validation_start(self) -> None:
        super().on_validation_start()
        if self.world_size < 2 or self._own_weights is not None:
            return
        state = self.lightning_module.state_dict()  # shares storage with the module's tensors
        self._own_weights = {name: tensor.clone() for name, tensor in state.items()}
        with torch.no_grad():
            for tensor in state.values():
                if tensor.is_floating_point():
                    dist.all_reduce(tensor)  # sum over replicas
                    tensor /= self.world_size

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # not at validation end: ModelCheckpoint saves at train epoch end, after validation, and must save the mean
        if self._own_weights is not None:
            self.lightning_module.load_state_dict(self._own_weights)
            self._own_weights = None
        super().on_train_batch_start(batch, batch_idx)


def main(args: Sequence[str] | None = None) -> Path:
    """``htr average``."""
    parser = argparse.ArgumentParser(
        prog="htr average",
        description="""Average the weights of checkpoints fine-tuned from the same start with different seeds
(a model soup): one network that reads better than each. Train the fine-tunes at once, one core each:

  OMP_NUM_THREADS=1 htr fit --config configs/iam_lines_cpu.yaml --model.init_from W --seed_everything 1 &
  OMP_NUM_THREADS=1 htr fit --config configs/iam_lines_cpu.yaml --model.init_from W --seed_everything 2 &
  wait
  htr average RUN1/checkpoints/best-*.ckpt RUN2/checkpoints/best-*.ckpt --output soup.ckpt
  htr test --config configs/iam_lines_cpu.yaml --ckpt_path soup.ckpt""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoints of `htr fit` (two or more)")
    parser.add_argument("--output", "-o", type=Path, required=True, help="the averaged checkpoint to write")
    options = parser.parse_args(args)
    if len(options.checkpoints) < 2:
        parser.error("give at least two checkpoints to average")
    path = average_checkpoints(options.checkpoints, options.output)
    print(f"wrote {path}: the mean of {len(options.checkpoints)} networks' weights")
    return path
