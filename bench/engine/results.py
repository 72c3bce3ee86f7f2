"""What a run yields: each epoch's numbers (EpochStats) and the finished run's (Result).

Their field metadata declares what a run leaves behind, and bench.engine.record reads it (MLflow-free):
"metric" is the name logged to MLflow; "report" marks the final numbers the report reads (a missing one
is an error). Adding a final metric is adding a field to Result with that metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from bench.data.preprocessing import Preprocessing


def _metric(name: str, *, report: bool = False) -> Any:
    return field(metadata={"metric": name, "report": report})


@dataclass
class EpochStats:
    epoch: int  # 1-based; the MLflow step
    train_loss: float = _metric("train_loss")
    train_acc: float = _metric("train_acc")
    val_loss: float = _metric("val_loss")
    val_acc: float = _metric("val_acc")
    lr: float = _metric("lr")  # at the end of the epoch
    # Training time of this epoch, evaluation excluded; named apart from the run's train_seconds.
    seconds: float = _metric("epoch_seconds")
    images_per_s: float = _metric("images_per_s", report=True)  # the report reads the last epoch's


@dataclass
class Result:
    config_hash: str
    history: list[EpochStats]
    best_val_acc: float = _metric("best_val_acc", report=True)
    best_epoch: int = _metric("best_epoch")
    test_loss: float = _metric("test_loss")
    test_acc: float = _metric("test_acc", report=True)
    params: int = _metric("params", report=True)
    flops: int = _metric("flops", report=True)  # forward FLOPs of one image
    train_seconds: float = _metric("train_seconds", report=True)
    device: str
    precision: str
    data_info: dict[str, Any]
    best_checkpoint: str | None = None  # path of the best-validation weights, when saved
    predictions: list[int] = field(default_factory=list)  # test-set predictions of the best model
    labels: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()  # (channels, height, width) the model takes
    model: torch.nn.Module | None = field(default=None, repr=False)  # the best-validation model
    evaluations: dict[str, float] = field(default_factory=dict)  # the paper's eval modes (bench.engine.evaluation)
    examples: torch.Tensor | None = field(default=None, repr=False)  # a few test images, uint8, for the logged model
    preprocessing: Any = field(default=None, repr=False)  # a Preprocessing of the training split

    def record(self) -> dict[str, Any]:
        """Everything but the model, as JSON-able values (what rank 0 of a torchrun hands back)."""
        return {
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"},
            "history": [asdict(h) for h in self.history],
            "examples": None if self.examples is None else self.examples.tolist(),
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_json(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Result:
        examples, preprocessing = record.get("examples"), record.get("preprocessing")
        return cls(
            **{
                **record,
                "history": [EpochStats(**h) for h in record["history"]],
                "input_shape": tuple(record["input_shape"]),
                "examples": None if examples is None else torch.tensor(examples, dtype=torch.uint8),
                "preprocessing": None if preprocessing is None else Preprocessing.from_json(preprocessing),
            }
        )
