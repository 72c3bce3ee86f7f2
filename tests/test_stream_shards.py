"""Several processes on a streamed image folder (gloo on CPU): each rank reads and decodes only its share
of every global batch, the shares make up the one-process batch, and training retraces one process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench import data, models
from bench.config import RunConfig
from bench.data import images
from bench.engine import evaluation
from bench.engine.distributed import Group
from bench.engine.train import fit

pytestmark = pytest.mark.usefixtures("isolated_cache")

WORLD = 2
MODES = ("centre", "dense", "multi-crop", "dense+multi-crop")


def streamed(tree, **changes) -> RunConfig:
    settings = dict(
        dataset=f"imagefolder:{tree}",
        image_size=32,
        train_scale="256,512",
        data_holder="stream",
        loader_workers=0,
        model="vgg-a",
        head="small",
        width=0.0625,
        epochs=1,
        batch_size=16,
        optimizer="sgd",
        lr=0.02,
        device="cpu",
    )
    return RunConfig(**{**settings, **changes})


def one_pass(splits, shard=(0, 1)):
    generator = torch.Generator().manual_seed(7)
    return list(
        splits.batches("train", 16, generator=generator, augment=True, shuffle=True, drop_last=True, shard=shard)
    )


def rank_pass(rank: int, tree: str, init: str, out: str) -> None:
    """One rank: a training pass over its shares, counting the images it decoded."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    splits = data.open_run(streamed(tree))  # (its normalisation sample is decoded here, on every rank)
    decoded = []
    original = images.decode_bytes

    def counting(raw, mode, path):
        decoded.append(str(path))
        return original(raw, mode, path)

    images.decode_bytes = counting
    batches = one_pass(splits, shard=(rank, WORLD))
    mine = {"x": [x.tolist() for x, _ in batches], "y": [y.tolist() for _, y in batches], "decoded": list(decoded)}
    # An evaluation pass in batches of 7: the ranks' shares are 3 and 4 rows, and together every row.
    decoded.clear()
    mine["eval_y"] = [y.tolist() for _, y in splits.batches("val", 7, shard=(rank, WORLD))]
    mine["eval_decoded"] = list(decoded)
    # Whole images for dense and multi-crop evaluation: each rank its contiguous share of the test part.
    decoded.clear()
    mine["whole_y"] = [label for _, label in splits.images("test", shard=(rank, WORLD))]
    mine["whole_decoded"] = list(decoded)
    # The paper's evaluation modes in the group: each rank scores its share, the counts are added.
    decoded.clear()
    mine["evaluations"] = evaluation.evaluate(
        scorer(splits), splits, MODES, (256, 384), contextlib.nullcontext, group=Group(rank, WORLD)
    )
    mine["evaluation_decoded"] = decoded
    everyone = [None] * WORLD
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(everyone, f)
    dist.destroy_process_group()


def scorer(splits) -> torch.nn.Module:
    torch.manual_seed(3)
    return models.build(
        "vgg-a", num_classes=splits.num_classes, in_channels=3, image_size=splits.image_size, width=0.0625, head="small"
    )


def test_each_rank_decodes_only_its_share_and_the_shares_make_the_batch(tree, tmp_path):
    out = tmp_path / "ranks.json"
    mp.spawn(rank_pass, args=(str(tree), f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=WORLD)
    ranks = json.loads(out.read_text())
    whole = one_pass(data.open_run(streamed(tree)))
    assert len(whole) == len(ranks[0]["x"]) == len(ranks[1]["x"]) > 2
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([torch.tensor(r["x"][i]) for r in ranks]), x)
        assert torch.cat([torch.tensor(r["y"][i]) for r in ranks]).tolist() == y.tolist()
    # Each rank decoded its half of the pass's images, and nothing of the other half.
    decoded = [r["decoded"] for r in ranks]
    assert len(decoded[0]) == len(decoded[1]) == len(whole) * 16 // WORLD
    assert not set(decoded[0]) & set(decoded[1])
    # Evaluation: every row of every batch once, each decoded by one rank only.
    val = [y.tolist() for _, y in data.open_run(streamed(tree)).batches("val", 7)]
    assert [r0 + r1 for r0, r1 in zip(ranks[0]["eval_y"], ranks[1]["eval_y"])] == val
    evaluated = [r["eval_decoded"] for r in ranks]
    assert len(evaluated[0]) + len(evaluated[1]) == sum(map(len, val))
    assert not set(evaluated[0]) & set(evaluated[1])
    whole = [label for _, label in data.open_run(streamed(tree)).images("test")]
    assert ranks[0]["whole_y"] + ranks[1]["whole_y"] == whole and len(ranks[0]["whole_y"]) == len(whole) // 2
    decoded_whole = [r["whole_decoded"] for r in ranks]
    assert len(decoded_whole[0]) + len(decoded_whole[1]) == len(whole)
    assert not set(decoded_whole[0]) & set(decoded_whole[1])
    one = data.open_run(streamed(tree))
    alone = evaluation.evaluate(scorer(one), one, MODES, (256, 384), contextlib.nullcontext)
    assert len(alone) == 4 * 3 * 2  # 4 modes x (2 scales + multi-scale) x top-1/top-5
    assert ranks[0]["evaluations"] == ranks[1]["evaluations"] == pytest.approx(alone, abs=1e-9)
    scored = [set(r["evaluation_decoded"]) for r in ranks]
    assert not scored[0] & scored[1] and len(scored[0]) + len(scored[1]) == len(whole)


def test_two_processes_train_a_streamed_folder_as_one(tree, tmp_path):
    # With the paper's evaluation modes at two test scales, which the ranks share out image by image.
    modes = dict(train_scale="256", test_scales="256,384", eval_modes="centre,dense,multi-crop,dense+multi-crop")
    settings = streamed(tree, epochs=2, **modes).to_dict()
    del settings["world_size"]
    (tmp_path / "config.json").write_text(json.dumps(settings))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={WORLD}",
        "-m",
        "bench.train",
        "--config-json",
        str(tmp_path / "config.json"),
        "--checkpoint-dir",
        str(tmp_path / "two"),
        "--events",
        str(tmp_path / "events.jsonl"),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    epochs = [e["epoch"] for e in events if "epoch" in e]
    one = fit(streamed(tree, epochs=2, **modes), checkpoint_dir=tmp_path / "one")
    assert len(epochs) == len(one.history) == 2
    for mine, theirs in zip(one.history, epochs):
        assert theirs["train_loss"] == pytest.approx(mine.train_loss, rel=1e-5)
        assert theirs["train_acc"] == mine.train_acc and theirs["val_acc"] == mine.val_acc
    [result] = [e["result"] for e in events if "result" in e]
    assert len(one.evaluations) == 4 * 3 * 2  # 4 modes x (2 scales + multi-scale) x top-1/top-5
    assert result["evaluations"] == pytest.approx(one.evaluations, abs=1e-9)
