"""Training: the Riemannian flow-matching trainer, its config and checkpoints."""

from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from .config import DATASET_DEFAULTS, TrainConfig
from .trainer import Trainer, TrainingDiverged, build_model, train

__all__ = [
    "TrainConfig",
    "DATASET_DEFAULTS",
    "Trainer",
    "TrainingDiverged",
    "train",
    "build_model",
    "save_checkpoint",
    "load_checkpoint",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
]
