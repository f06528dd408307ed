"""Training: the Riemannian flow-matching trainer, its config, checkpoints and multi-process (DDP) runs."""

from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from .config import DATASET_DEFAULTS, TrainConfig
from .distributed import DistInfo, close_distributed, init_distributed
from .malloc import keep_freed_memory
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
    "DistInfo",
    "init_distributed",
    "close_distributed",
    "keep_freed_memory",
]
