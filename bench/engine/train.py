"""The training engine: fit(config) -> Result.

It knows nothing of MLflow or Optuna: callers watch it through `on_epoch` / `on_batch` and may
stop it by raising from them (Optuna's pruning does exactly that). Speed comes from keeping the
dataset on the device as uint8, augmenting whole batches there, channels_last, autocast where
the hardware has fast low precision, and never syncing with the host inside the step loop
except to show progress.

Resume: a checkpoint is written after every epoch; started again with the same config and
checkpoint_dir, fit continues after the last complete epoch and, because the per-epoch batch
order comes from (seed, epoch) and the global RNG is restored, reaches the same numbers as an
uninterrupted run.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from bench import data, models
from bench.config import RunConfig
from bench.data import fingerprint as data_fingerprint
from bench.data.preprocessing import Preprocessing
from bench.device import resolve_device
from bench.engine import checkpoint, distributed, evaluation, resume, step
from bench.engine.optimization import lr_at, make_optimizer, plateau_drops
from bench.engine.precision import autocast, resolve_precision
from bench.engine.results import EpochStats, Result
from bench.engine.transfer import freeze_convs, load_pretrained, start_from_a
from bench.errors import BenchError, RunFailed

EVAL_BATCH = 512
EXAMPLES = 4  # test images kept with a result: the logged model's input example


class Evaluation(NamedTuple):
    """Loss and accuracy on a split, and the predictions in its order when they were asked for."""

    loss: float
    acc: float
    predictions: list[int]


def build_model(config: RunConfig, splits: data.RunData, init_from: str | Path | None = None) -> torch.nn.Module:
    def build(name: str) -> torch.nn.Module:
        return models.build(
            name,
            num_classes=splits.num_classes,
            in_channels=splits.in_channels,
            image_size=splits.image_size,
            **config.model_options,
        )

    model = build(config.model)
    if config.init_from_a:
        start_from_a(model, build("vgg-a"), config, init_from)
    if config.pretrained is not None:
        load_pretrained(model, config.pretrained)
    if config.freeze:
        freeze_convs(model, config.freeze)
    return model


def flops_per_image(config: RunConfig, data_dir: str | None = None) -> int:
    """Forward FLOPs of `config`'s model on one image of its data: what equal-compute studies equalise."""
    splits = _data_of(config.data_settings, data_dir)
    return models.describe(build_model(config, splits), splits.input_shape).flops


@functools.lru_cache(maxsize=4)
def _data_of(data_settings: tuple[tuple[str, Any], ...], data_dir: str | None) -> data.RunData:
    """The data of every config with these data settings, opened once (a study's variants share it)."""
    return data.open_run(RunConfig(**dict(data_settings), loader_workers=0), data_dir=data_dir)


class Engine:
    """The pieces of one run that the step loop, evaluation and checkpointing share."""

    def __init__(
        self,
        config: RunConfig,
        data_dir: str | None = None,
        group: distributed.Group = distributed.SINGLE,
        init_from: str | Path | None = None,
    ):
        if config.world_size != group.world:
            raise BenchError(
                f"the run is set for world size {config.world_size} but runs in {group.world} "
                "process(es): start it with torchrun --nproc-per-node "
                f"{config.world_size} (or --gpus-per-run in a study)"
            )
        self.config = config
        self.group = group
        self.device = group.device(resolve_device(config.device))
        self.precision = resolve_precision(config.precision, self.device)
        self.step_kind = step.choose(config, self.device, group)  # refuses a graph step without CUDA
        self.splits = data.open_run(config, data_dir=data_dir, device=self.device)
        torch.manual_seed(config.seed)
        self.model = build_model(config, self.splits, init_from).to(self.device)
        self.description = models.describe(self.model, self.splits.input_shape)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(config, self.model, fused=self.step_kind == "graph")
        self.steps_per_epoch = self.splits.num_batches("train", config.batch_size, drop_last=True)
        self.epochs = math.ceil(config.total_steps(self.steps_per_epoch) / max(1, self.steps_per_epoch))
        # Several ranks: DDP averages the gradients of their shards (the whole batch's gradient), and
        # evaluation runs the bare module, since each rank sees a different number of eval batches.
        wrapped = group.wrap(self.model, self.device, config.sync_batch_norm)
        self.step_model = torch.compile(wrapped) if config.compile else wrapped
        self.eval_model = (
            self.step_model if not group.active else (torch.compile(self.model) if config.compile else self.model)
        )
        if group.active:  # one init (DDP broadcasts rank 0's weights), but each rank its own dropout
            torch.manual_seed(config.seed * 1_000_003 + group.rank)
        # Frozen layers keep their pretrained BatchNorm statistics too, not only their weights.
        self.frozen_norms = [
            m
            for m in self.model.modules()
            if isinstance(m, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters())
        ]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step = step.make(
            self.step_kind,
            self.step_model,
            self.optimizer,
            self.scaler,
            lambda: autocast(self.device, self.precision, cache=self.step_kind == "eager"),
            config.label_smoothing,
            self.device,
        )
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def autocast(self):
        return autocast(self.device, self.precision)

    def train_epoch(self, epoch: int, history: list[EpochStats], on_batch=None) -> tuple[float, float, int]:
        config, steps = self.config, self.steps_per_epoch
        # Under equal compute the run may end part-way through its last epoch.
        this_epoch = min(steps, config.total_steps(steps) - (epoch - 1) * steps)
        drops = plateau_drops(config, [h.val_acc for h in history])
        generator = torch.Generator(device=self.device).manual_seed(config.seed * 100_003 + epoch)
        seen = 0
        self.step_model.train()
        for norm in self.frozen_norms:
            norm.eval()
        self.step.start_epoch()
        batches = self.splits.batches(
            "train",
            config.batch_size,
            generator=generator,
            augment=config.augment,
            shuffle=True,
            drop_last=True,
            channels_last=config.channels_last,
            shard=self.group.shard,
        )  # every rank draws the same global batch and reads only its rows of it
        for i, (x, y) in zip(range(this_epoch), batches):
            loss = self.step(x, y, lr_at(config, (epoch - 1) * steps + i, steps, drops))
            seen += len(y)
            if on_batch is not None and self.group.is_main:
                on_batch(i + 1, this_epoch, loss)
        if not seen:
            raise RuntimeError("no training batch: the training split is smaller than one batch")
        loss_sum, correct = self.step.totals()
        loss_sum, correct, total = self.group.sum(loss_sum, correct, torch.tensor(seen, device=self.device))
        seen = int(total)
        return loss_sum.item() / seen, correct.item() / seen, seen

    @property
    def lr(self) -> float:
        """The last step's learning rate, before any group's scale (a device tensor under the graph step)."""
        group = self.optimizer.param_groups[0]
        return float(group["lr"]) / group["lr_scale"]

    @torch.no_grad()
    def evaluate(self, part: str, model=None, keep_predictions=False) -> Evaluation:
        """Loss and accuracy on a split (and its predictions if `keep_predictions`); the ranks of a
        group share its batches and add up exactly."""
        model = model or self.eval_model
        model.eval()
        self.group.sync_buffers(self.model)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        n, kept = 0, []  # (batch index, rank, its predictions): each rank holds its rows of every batch
        # Each rank reads (on a streamed folder: decodes) only its share of each batch's rows.
        batches = self.splits.batches(part, EVAL_BATCH, channels_last=self.config.channels_last, shard=self.group.shard)
        for i, (x, y) in enumerate(batches):
            with self.autocast():
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            pred = logits.argmax(1)
            correct += (pred == y).sum()
            n += len(y)
            if keep_predictions:
                kept.append((i, self.group.rank, pred.tolist()))
        loss_sum, correct, total = self.group.sum(loss_sum, correct, torch.tensor(n, device=self.device))
        predictions = []
        if keep_predictions:
            shares = sorted(b for rank in self.group.gather(kept) for b in rank)
            predictions = [p for _, _, rows in shares for p in rows]
        return Evaluation(float(loss_sum) / int(total), float(correct) / int(total), predictions)

    def state(self, epoch: int, history: list[EpochStats], best: dict[str, Any]) -> dict[str, Any]:
        return {
            "config_hash": self.config.hash,
            "config": self.config.to_dict(),
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": [asdict(h) for h in history],
            "best": best,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            # Every rank's own generator (dropout differs per rank), so a resumed run goes on identically.
            "rng_ranks": self.group.gather(torch.get_rng_state()) if self.group.active else [],
        }

    def restore(self, state: dict[str, Any]) -> tuple[int, list[EpochStats], dict[str, Any]]:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step.restored()
        torch.set_rng_state(state["rng_ranks"][self.group.rank] if self.group.active else state["rng_cpu"])
        if state["rng_cuda"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        return state["epoch"], [EpochStats(**h) for h in state["history"]], state["best"]


def fit(
    config: RunConfig,
    *,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_batch: Callable[[int, int, torch.Tensor], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    data_dir: str | None = None,
    group: distributed.Group = distributed.SINGLE,
    init_from: str | Path | None = None,
) -> Result:
    """Train `config` to the end (or resume it) and return its history and final test numbers.

    In a group of processes (torchrun), every rank calls fit; rank 0 alone calls the callbacks and
    writes the checkpoints, which every rank resumes from. `init_from`: the best checkpoint of the
    vgg-a run that an init_from_a run starts from.
    """
    engine = Engine(config, data_dir, group, init_from)
    if not group.is_main:
        on_epoch = on_batch = None
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last_path = ckpt_dir / "last.pt" if ckpt_dir else None
    best_path = ckpt_dir / "best.pt" if ckpt_dir else None

    trained_on = data_fingerprint.of(config, engine.splits.info) if ckpt_dir else {}
    start, history, best = resume.resume(engine, last_path, best_path, trained_on)
    best_weights = None
    for epoch in range(start + 1, engine.epochs + 1):
        began = time.perf_counter()
        train_loss, train_acc, seen = engine.train_epoch(epoch, history, on_batch)
        seconds = time.perf_counter() - began  # .item() in train_epoch has synchronised
        val_loss, val_acc, _ = engine.evaluate("val")
        _check_finite(epoch, train_loss, val_loss)
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            train_acc=train_acc,
            val_loss=val_loss,
            val_acc=val_acc,
            lr=engine.lr,
            seconds=seconds,
            images_per_s=seen / seconds,
        )
        history.append(stats)
        if val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "epoch": epoch}
            best_weights = copy.deepcopy(engine.model.state_dict())
        if ckpt_dir is not None:  # with the data it trained on, so that a resume on other data is refused
            state = {**engine.state(epoch, history, best), "data": trained_on}
            if best["epoch"] == epoch:
                _save(group, best_path, {**state, "optimizer": {}})
            _save(group, last_path, state)
        if on_epoch is not None:
            on_epoch(stats)

    if best_weights is None and best_path is not None and best_path.exists():
        best_weights = checkpoint.load(best_path, config_hash=config.hash)["model"]
    if best_weights is not None:
        engine.model.load_state_dict(best_weights)
    return _tested(engine, history, best, best_path)


def _check_finite(epoch: int, train_loss: float, val_loss: float) -> None:
    """A loss that is NaN or infinite means the weights are garbage from here on: stop the run (FAILED)."""
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        raise RunFailed(
            f"epoch {epoch}: the loss is not finite (training {train_loss}, validation "
            f"{val_loss}): the run diverged; lower lr (or raise warmup_epochs) and run it again"
        )


def _tested(engine: Engine, history: list[EpochStats], best: dict[str, Any], best_path: Path | None) -> Result:
    """The result of the engine's model (its best weights loaded): the test numbers and what the record needs."""
    config = engine.config
    test_loss, test_acc, predictions = engine.evaluate("test", engine.model, keep_predictions=True)
    evaluations = {}
    if config.train_scale is not None:
        evaluations = evaluation.evaluate(
            engine.model,
            engine.splits,
            config.eval_mode_list,
            config.test_scale_list,
            engine.autocast,
            config.channels_last,
            group=engine.group,
        )
    return Result(
        config_hash=config.hash,
        history=history,
        best_val_acc=best["val_acc"],
        best_epoch=best["epoch"],
        test_loss=test_loss,
        test_acc=test_acc,
        params=engine.description.params,
        flops=engine.description.flops,
        train_seconds=sum(h.seconds for h in history),
        device=str(engine.device),
        precision=engine.precision,
        data_info=engine.splits.info,
        best_checkpoint=str(best_path) if best_path is not None and best_path.exists() else None,
        predictions=predictions,
        labels=engine.splits.labels("test").tolist(),
        classes=list(engine.splits.classes),
        input_shape=engine.splits.input_shape,
        model=engine.model,
        evaluations=evaluations,
        examples=engine.splits.examples(EXAMPLES),
        preprocessing=Preprocessing.from_splits(engine.splits),
    )


def _save(group: distributed.Group, path: Path, state: dict[str, Any]) -> None:
    """Rank 0 writes; the others wait, so that no rank resumes from a file still being written."""
    if group.is_main:
        checkpoint.save(path, state)
    group.barrier()
