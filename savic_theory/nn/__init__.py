"""SAVIC on neural networks: ResNet18, image data over clients, a single-process and a
``torch.distributed`` engine, and the ``savic nn`` experiment runner.

Needs PyTorch (the ``nn`` extra: ``pip install 'savic-theory[nn]'``); torchvision is not used.

>>> from savic_theory.nn import ResNet18, Trainer, make_method
"""
try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without torch only
    raise ImportError("savic_theory.nn needs PyTorch: pip install 'savic-theory[nn]'") from exc

from .config import NNConfig, load_nn_config
from .data import (DATASETS, ImageSet, DeviceData, augment, client_parts, load_cifar10,
                   load_fashion_mnist, load_images, read_idx, synthetic_images)
from .engine import METRICS, LocalComm, Trainer, to_channels_last
from .methods import METHOD_NAMES, Method, Objective, TorchScaling, make_method, parse_method
from .model import NORMS, BatchStatNorm, ParamLayout, ResNet18, init_params
from .runner import run_experiment

__all__ = ["ResNet18", "BatchStatNorm", "ParamLayout", "init_params", "NORMS",
           "ImageSet", "DATASETS", "DeviceData", "augment", "client_parts", "load_cifar10",
           "load_fashion_mnist", "load_images", "read_idx", "synthetic_images",
           "METHOD_NAMES", "Method", "Objective", "TorchScaling", "make_method", "parse_method",
           "Trainer", "LocalComm", "METRICS", "to_channels_last",
           "NNConfig", "load_nn_config", "run_experiment"]
