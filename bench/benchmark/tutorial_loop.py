"""The reference that `python -m bench.benchmark --end-to-end` measures bench.train against.

It is the training loop the tutorials use (PyTorch's CIFAR-10 tutorial, kuangliu/pytorch-cifar):
a torchvision-style dataset that hands each image to PIL and applies RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor and Normalize one sample at a time in DataLoader worker processes,
the model in the default (NCHW) memory format, and the loss and correct count read back every step.

It is a fair baseline, not a crippled one: it shares the Engine's training split, normalisation,
model and initial weights, optimizer, learning-rate schedule (per step, as a LambdaLR), precision
and batch size, and reaches the same kind of accuracy (tests/test_benchmark.py checks that). Only
the data path, the memory format and the per-step read-backs differ, as they do between a tutorial
and bench.train. It lives beside the benchmark, not in the engine, because nothing trains with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench import data
from bench.engine import train


class TutorialDataset(Dataset):
    """Like torchvision.datasets.FashionMNIST / CIFAR10: uint8 images served as PIL images through `transform`.

    Built over bench.data's uint8 tensors (already padded 28 -> 32 for the MNIST family) so that no
    download is needed and both loops see exactly the same images.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        # As torchvision keeps them: height x width (x channels) arrays on the CPU.
        images = images.cpu()
        self.images = images[:, 0].numpy() if images.shape[1] == 1 else images.permute(0, 2, 3, 1).numpy()
        self.labels = labels.cpu().tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def tutorial_transform(splits: data.Splits, augment: bool = True) -> transforms.Compose:
    """The tutorials' per-sample pipeline, normalised with the same statistics as bench.data's batches."""
    steps = [transforms.RandomCrop(splits.image_size, padding=data.CROP_PAD), transforms.RandomHorizontalFlip()]
    return transforms.Compose(
        [*(steps if augment else []), transforms.ToTensor(), transforms.Normalize(splits.mean, splits.std)]
    )


class TutorialLoop:
    """The tutorials' loop over `engine`'s data, with a model of its own that starts from the same weights."""

    def __init__(self, engine: train.Engine, workers: int = 2):
        config, device = engine.config, engine.device
        self.engine = engine
        dataset = TutorialDataset(
            engine.splits.train_x, engine.splits.train_y, tutorial_transform(engine.splits, config.augment)
        )
        self.loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=True,
            drop_last=True,  # drop_last: the Engine's step count
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(config.seed),
        )
        torch.manual_seed(config.seed)  # the Engine seeds the same way right before building its model
        self.model = train.build_model(config, engine.splits).to(device)
        self.optimizer = train.make_optimizer(config, self.model)
        steps = len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            [
                lambda step, scale=group["lr_scale"]: scale * train.lr_at(config, step, steps, 0) / config.lr
                for group in self.optimizer.param_groups
            ],
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=engine.precision == "fp16")

    def train_epoch(self, on_batch=None) -> tuple[float, float, int]:
        """One pass over the training split: (mean loss, accuracy, images seen), as Engine.train_epoch."""
        device, model = self.engine.device, self.model
        label_smoothing = self.engine.config.label_smoothing
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        steps = len(self.loader)
        for i, (x, y) in enumerate(self.loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with self.engine.autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            loss_sum += loss.item() * len(y)  # the tutorials' running statistics, read every step
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            if on_batch is not None:
                on_batch(i + 1, steps, loss.detach())
        return loss_sum / seen, correct / seen, seen
