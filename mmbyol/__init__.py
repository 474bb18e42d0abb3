"""mmbyol: BYOL self-supervised learning for images, audio, text and time series, with pluggable
modalities and augmentations."""

from .augment import Augmentation, Choice, Compose, Float, Int, Interval, ViewPair, build_views
from .byol import BYOL, SimCLR, Supervised
from .config import DataConfig, load_config
from .errors import CheckpointError, ConfigError, DataError, MMBYOLError, TrainingDiverged
from .evaluate import evaluate, load_encoder
from .losses import byol_loss, info_nce_loss
from .modalities.base import DataSet, Modality, TwoViews
from .optim import LARS
from .registry import (
    list_names,
    register_augmentation,
    register_dataset,
    register_encoder,
    register_modality,
)
from .schedules import lr_schedule, tau_schedule
from .train import train

__version__ = "0.1.0"

__all__ = [
    "BYOL", "SimCLR", "Supervised", "Augmentation", "Compose", "ViewPair", "build_views", "load_config", "train",
    "evaluate", "load_encoder", "byol_loss", "info_nce_loss", "LARS", "lr_schedule", "tau_schedule",
    "Modality", "DataSet", "TwoViews", "DataConfig", "register_augmentation", "register_dataset",
    "register_encoder", "register_modality",
    "Float", "Int", "Choice", "Interval",
    "list_names", "MMBYOLError", "ConfigError", "DataError", "CheckpointError", "TrainingDiverged",
]
