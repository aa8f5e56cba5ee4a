"""Mask R-CNN from scratch, in plain PyTorch: the companion package of the course's notebooks."""
from .config import MaskRCNNConfig, small_config
from .model import MaskRCNN, maskrcnn_resnet50_fpn
from .torchvision_weights import load_torchvision_weights

__all__ = ["MaskRCNN", "MaskRCNNConfig", "load_torchvision_weights", "maskrcnn_resnet50_fpn", "small_config"]
