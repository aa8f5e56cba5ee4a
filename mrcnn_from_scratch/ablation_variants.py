"""The paper's ablations as config switches: what each variant changes, what it is compared with, and
what the paper measured for it (He et al., Mask R-CNN, 2017: Table 2 for the mask head and pooling,
Table 3 for the box AP with and without the mask branch). Chapter 11 explains each row.
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Paper:
    """The paper's pair of numbers for one comparison, on COCO minival (test-dev for Table 3)."""

    metric: str  # "segm.AP" (mask AP) or "bbox.AP" (box AP)
    variant: float
    reference: float
    setting: str  # the backbone and table, because the paper's pairs come from different ones

    @property
    def difference(self) -> float:
        return self.variant - self.reference


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict = field(default_factory=dict)  # MaskRCNNConfig fields changed from the small config
    compare_to: str | None = "baseline"  # the variant it is measured against
    metric: str = "segm.AP"  # the number the comparison is about
    paper: Paper | None = None
    what: str = ""


VARIANTS = {v.name: v for v in [
    Variant("baseline", compare_to=None,
            what="Mask R-CNN as built: RoIAlign, the FPN level rule, an FCN head, a sigmoid per class"),
    Variant("roipool", {"roi_op": "pool"}, paper=Paper("segm.AP", 26.9, 30.3, "ResNet-50-C4, stride 16, Table 2c"),
            what="RoIPool's rounded bins instead of RoIAlign, in both poolers"),
    Variant("align_p5", {"roi_level": "P5"},
            what="RoIAlign, every RoI pooled from P5 (stride 32) instead of its FPN level"),
    Variant("roipool_p5", {"roi_op": "pool", "roi_level": "P5"}, compare_to="align_p5",
            paper=Paper("segm.AP", 23.6, 30.9, "ResNet-50-C5, stride 32, Table 2d"),
            what="RoIPool from P5 (stride 32), against RoIAlign from P5"),
    Variant("softmax", {"mask_loss": "softmax"}, paper=Paper("segm.AP", 24.8, 30.3, "ResNet-50-C4, Table 2b"),
            what="a softmax over the classes at each pixel instead of a sigmoid per class"),
    Variant("class_agnostic", {"class_agnostic_mask": True},
            paper=Paper("segm.AP", 29.7, 30.3, "ResNet-50-C4, Table 2 text"),
            what="one mask for every class instead of one per class"),
    Variant("mlp_head", {"mask_head": "mlp"}, paper=Paper("segm.AP", 31.5, 33.6, "ResNet-50-FPN, Table 2e"),
            what="an MLP mask head (fc, fc, fc to K·28·28) instead of the FCN"),
    Variant("no_mask_loss", {"mask_loss": "none"}, metric="bbox.AP",
            paper=Paper("bbox.AP", 37.3, 38.2, "ResNet-101-FPN, Table 3: Faster R-CNN with RoIAlign against Mask R-CNN"),
            what="no mask loss: Faster R-CNN, to see what training masks does for the boxes"),
]}
