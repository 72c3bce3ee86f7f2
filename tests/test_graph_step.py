"""The graph-captured training step (bench.engine.step), all of it that runs on a CPU: the fused optimizer
reading its learning rate from device tensors, the static input buffers, the metrics summed on the
device and a resume into it, against the eager step. Only the capture itself needs a GPU.

Tolerance (fp32, on the CPU): after two epochs with a warm-up and a cosine schedule, every weight and
buffer equals the eager run's to 1e-5 relative to the tensor's largest value (+ 1e-8), the epoch's
mean loss to 1e-5 relative, and its accuracy to one image; the fused optimizers differ from torch's
default ones only in the order of their float operations (1e-7 to 1e-6 after a few steps).
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from conftest import ROOT, command_error, main_error

from bench.ablation import main as ablation_main
from bench.config import RunConfig
from bench.engine import distributed, step
from bench.engine.train import Engine, autocast, make_optimizer
from bench.errors import BenchError

RELATIVE = 1e-5
ABSOLUTE = 1e-8  # conv biases before a BatchNorm (~1e-7) are moved by weight decay and float noise only
RUN = dict(
    model="vgg-a",
    batch_norm=True,
    width=0.0625,
    dataset="synthetic",
    subset=512,
    epochs=2,
    batch_size=64,
    lr=0.05,
    schedule="cosine",
    warmup_epochs=0.5,
    device="cpu",
    precision="fp32",
)


def graph_engine(config: RunConfig) -> Engine:
    """An engine whose step is the graph step's path run without capture (what a CPU can run of it)."""
    engine = Engine(config)
    engine.optimizer = make_optimizer(config, engine.model, fused=True)
    engine.step = step.GraphStep(
        engine.step_model,
        engine.optimizer,
        engine.scaler,
        lambda: autocast(engine.device, engine.precision, cache=False),
        config.label_smoothing,
        engine.device,
        capture=False,
    )
    return engine


def assert_same_state(eager: Engine, graph: Engine) -> None:
    theirs = graph.model.state_dict()
    for name, value in eager.model.state_dict().items():
        allowed = RELATIVE * value.abs().max().item() + ABSOLUTE
        assert (value - theirs[name]).abs().max().item() <= allowed, name


def assert_same_epoch(eager: tuple[float, float, int], graph: tuple[float, float, int]) -> None:
    (loss, acc, seen), (g_loss, g_acc, g_seen) = eager, graph
    assert g_seen == seen
    assert g_loss == pytest.approx(loss, rel=RELATIVE)
    assert abs(g_acc - acc) <= 1 / seen + 1e-12


# AdamW on a net without BatchNorm: a conv bias right before a BatchNorm has no gradient but float noise,
# which Adam's normalised step turns into steps of lr's size, different for any two implementations.
@pytest.mark.parametrize(
    "optimizer", [dict(optimizer="sgd", nesterov=True), dict(optimizer="adamw", lr=0.002, batch_norm=False)]
)
def test_the_graph_path_gives_the_eager_numbers_and_resumes_from_an_eager_checkpoint(optimizer):
    config = RunConfig(**{**RUN, **optimizer})
    eager, graph = Engine(config), graph_engine(config)
    assert eager.step_kind == "eager" and isinstance(eager.step, step.EagerStep)
    assert_same_state(eager, graph)  # the same start
    assert_same_epoch(eager.train_epoch(1, []), graph.train_epoch(1, []))
    assert_same_state(eager, graph)
    assert graph.lr == pytest.approx(eager.lr, rel=1e-6) and isinstance(graph.lr, float)

    # An eager run's checkpoint resumed by the graph step: its groups keep the fused kernels and read
    # the step's lr tensors again (a loaded float lr would stay at the checkpoint's value).
    state = copy.deepcopy(eager.state(1, [], {"val_acc": 0.0, "epoch": 1}))  # as read from its file
    resumed = graph_engine(config)
    resumed.restore(state)
    assert all(g["fused"] for g in resumed.optimizer.param_groups)
    assert_same_epoch(eager.train_epoch(2, []), resumed.train_epoch(2, []))
    assert_same_state(eager, resumed)
    assert resumed.lr == pytest.approx(eager.lr, rel=1e-6)


def test_a_run_stopped_mid_epoch_takes_the_same_steps():
    # Equal compute: 1.5 epochs of steps; the second epoch stops half-way on both paths.
    config = RunConfig(**{**RUN, "compute": "flops", "compute_scale": 0.75})
    eager, graph = Engine(config), graph_engine(config)
    epochs = [(eager.train_epoch(epoch, []), graph.train_epoch(epoch, [])) for epoch in (1, 2)]
    for both in epochs:
        assert_same_epoch(*both)
    assert epochs[1][0][2] < eager.steps_per_epoch * config.batch_size  # the second epoch was cut short
    assert_same_state(eager, graph)


def test_auto_is_eager_where_a_graph_cannot_run_and_says_why_on_cuda(caplog):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    single = distributed.SINGLE
    with caplog.at_level(logging.WARNING, logger="bench.engine.step"):
        assert step.choose(RunConfig(device="cpu"), cpu, single) == "eager"
        assert caplog.records == []  # on a CPU, auto means eager: nothing to say
        assert step.why_eager(RunConfig(), cuda, single) is None
        for settings, reason in [({"precision": "fp16"}, "GradScaler"), ({"compile": True}, "torch.compile")]:
            config = RunConfig(**settings)
            assert reason in step.why_eager(config, cuda, single)
            caplog.clear()
            assert step.choose(config, cuda, single) == "eager"
            [record] = caplog.records
            assert reason in record.getMessage() and "eager, not a CUDA graph" in record.getMessage()
    assert step.choose(RunConfig(step="eager"), cuda, single) == "eager"


def test_the_setting_keeps_recorded_runs_their_hashes():
    assert RunConfig().hash == "e890017fcb39"  # the default config's hash before `step` existed
    assert RunConfig(step="auto").hash == RunConfig().hash != RunConfig(step="eager").hash
    with pytest.raises(BenchError, match="unknown step 'captured'; choose one of: auto, eager, graph"):
        RunConfig(step="captured")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_graph_step_without_cuda_is_one_line_before_anything_is_recorded(tmp_path, capsys, monkeypatch):
    ck = tmp_path / "ck"
    message = command_error(
        "bench.train",
        "--dataset",
        "synthetic",
        "--subset",
        "256",
        "--step",
        "graph",
        "--checkpoint-dir",
        str(ck),
        cwd=ROOT,
    )
    assert "step 'graph' captures the training step as a CUDA graph" in message
    assert "this run's device is cpu" in message and "--step eager" in message
    assert not ck.exists()

    monkeypatch.chdir(tmp_path)
    argv = [
        "--study",
        "depth",
        "--budget",
        "smoke",
        "--step",
        "graph",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--storage",
        str(tmp_path / "optuna.journal"),
        "--checkpoint-root",
        str(tmp_path / "checkpoints"),
    ]
    assert "step 'graph'" in main_error(ablation_main, argv, capsys)
    assert list(tmp_path.iterdir()) == []  # no store, no journal, no checkpoint folder
