"""Every setting of the model in one readable object: print it, change a field, build a model from it.

`MaskRCNNConfig()` holds torchvision's `maskrcnn_resnet50_fpn` defaults. `small_config()` is a recipe
for training from scratch on a CPU in minutes (chapter 09 explains each choice).
"""
from dataclasses import asdict, dataclass, replace

# The switches of the paper's ablations (chapter 11), each with its allowed values; the first is the default.
CHOICES = {
    "roi_op": ("align", "pool"),
    "roi_level": ("fpn", "P2", "P3", "P4", "P5"),
    "mask_head": ("fcn", "mlp"),
    "mask_loss": ("sigmoid", "softmax", "none"),
}


@dataclass
class MaskRCNNConfig:
    num_classes: int = 91  # including background (label 0); COCO's ids run to 90
    class_names: tuple[str, ...] = ()  # optional, names of labels 1..num_classes-1, kept in checkpoints

    # Backbone: ResNet body + FPN.
    depth: int = 50
    width: int = 64  # channels of the stem; stage k has width·2^(k-2) (·4 for bottlenecks)
    norm: str = "frozen_bn"  # "frozen_bn", "bn" or "gn"
    frozen_bn_eps: float = 1e-5  # 0.0 for torchvision's COCO checkpoint
    trainable_stages: int = 3  # of (C5, C4, C3, C2, stem), counted from the top
    fpn_channels: int = 256

    # Input transform.
    min_size: tuple[int, ...] = (800,)
    max_size: int = 1333
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    # Anchors and RPN.
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one size per level P2..P6
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5

    # RoI heads.
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_representation_size: int = 1024  # fc6 and fc7
    mask_channels: int = 256  # of the mask head's convolutions
    # The FPN rule that picks a level per RoI: a box of roi_canonical_scale pixels (ImageNet's 224 at
    # torchvision's 800-pixel images) is pooled from P4, each halving of its side moves it one level down.
    roi_canonical_scale: int = 224
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    # How the RPN and the box head sample their training boxes: "ranks" (random keys, no host sync,
    # the fast default) or "torchvision" (its exact draws, for comparing training losses with it).
    sampler_draws: str = "ranks"

    # The paper's ablations (its Table 2; chapter 11). The defaults are Mask R-CNN's own choices.
    roi_op: str = "align"  # "pool": RoIPool's rounded bins instead of RoIAlign, in both poolers
    roi_level: str = "fpn"  # the FPN rule above, or one fixed level for every RoI: "P2" .. "P5" (stride 4 .. 32)
    mask_head: str = "fcn"  # "mlp": two fc layers of box_representation_size, then one to K·28·28
    mask_loss: str = "sigmoid"  # "softmax": classes compete per pixel; "none": no mask loss (Faster R-CNN)
    class_agnostic_mask: bool = False  # one mask for every class instead of one per class

    def __post_init__(self):
        for name, known in CHOICES.items():
            if getattr(self, name) not in known:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(map(repr, known))}")
        if self.mask_loss == "softmax" and self.class_agnostic_mask:
            raise ValueError("mask_loss='softmax' needs a mask per class to compete: it cannot be combined with "
                             "class_agnostic_mask=True")

    def replace(self, **changes) -> "MaskRCNNConfig":
        """A copy with some fields changed (unknown names raise TypeError)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def small_config(num_classes: int, class_names: tuple[str, ...] = ()) -> MaskRCNNConfig:
    """A Mask R-CNN sized for 128-pixel images and a CPU: a narrow ResNet-18 with GroupNorm (batch
    statistics of a few small images are too noisy for BatchNorm, and there are no ImageNet statistics
    to freeze), a 64-channel FPN, anchors halved to fit small objects, RoI counts cut to what a
    handful of objects per image needs, and a RoI level rule for small images: each RoI is pooled from
    the coarsest level on which it still spans the box head's 7 cells, so a 112-pixel box (7 cells of
    P4's stride 16) goes to P4, a 56-pixel one to P3 and smaller ones to P2. (Scaling torchvision's 224
    with the image, 224 · 128 / 800 = 36, sends 30-pixel objects to P3 and P4, whose 16 and 8-cell maps
    are too coarse for their masks: it cost a third of the mask AP at step 500; docs/benchmarks.md.)"""
    return MaskRCNNConfig(
        num_classes=num_classes, class_names=class_names,
        depth=18, width=32, norm="gn", trainable_stages=5, fpn_channels=64,
        min_size=(128,), max_size=128,
        anchor_sizes=(16, 32, 64, 128, 256),
        rpn_pre_nms_top_n_train=600, rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_train=300, rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=64, box_representation_size=256, mask_channels=64,
        box_detections_per_img=20, roi_canonical_scale=112,
    )


CONFIGS = {"small": small_config, "r50": lambda num_classes, class_names=(): MaskRCNNConfig(num_classes, class_names)}
