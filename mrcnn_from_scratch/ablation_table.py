"""The ablation table: each variant's AP over seeds, its gap to what it is compared with, and the paper's.

A gap means something only against the spread between seeds. So each comparison reports:
- the gap of the means, variant minus reference, in AP points (×100);
- its standard error, sqrt(s_v²/n_v + s_r²/n_r) with s the standard deviation over seeds, and the gap in
  those units ("σ" in the table): around 2 or more is a gap the seeds agree on;
- whether the gap is smaller than the spread of either side's seeds, said in words;
- whether its sign is the paper's.
"""
import math
import statistics

from .ablation_variants import Variant

METRICS = ("segm.AP", "segm.AP50", "segm.AP75", "bbox.AP")
LABELS = {"segm.AP": "mask AP", "segm.AP50": "mask AP50", "segm.AP75": "mask AP75", "bbox.AP": "box AP"}


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: list[dict], variants: list[Variant]) -> dict:
    """Per variant, in the order of `variants`: {"seeds": [...], metric: {"mean", "std", "n"}} over its runs'
    results; and for a variant whose reference is there too, {"comparison": {...}} (see `compare`)."""
    summary = {}
    for variant in variants:
        runs = [r for r in results if r["variant"] == variant.name]
        if runs:
            summary[variant.name] = {"seeds": sorted(r["seed"] for r in runs)}
            for metric in METRICS:
                mean, std = mean_and_std([r["metrics"][metric] for r in runs])
                summary[variant.name][metric] = {"mean": mean, "std": std, "n": len(runs)}
    for variant in variants:
        row = summary.get(variant.name)
        if row and variant.compare_to in summary:
            row["comparison"] = compare(row[variant.metric], summary[variant.compare_to][variant.metric], variant)
    return summary


def mask_minus_box(results: list[dict], variants: list[Variant]) -> dict[str, tuple[float, float]]:
    """Per variant with a mask loss: mean and standard deviation over seeds of mask AP minus box AP, in points.

    Mask AP counts a detection only if its box found the object *and* its mask fits, so it moves with the
    detector's quality as well as the masks'. Minus the box AP of the same runs, it is closer to the masks'
    own share: how much is lost between a detection's box and its mask.
    """
    differences = {}
    for variant in variants:
        runs = [r["metrics"] for r in results if r["variant"] == variant.name]
        if runs and variant.overrides.get("mask_loss") != "none":
            mean, std = mean_and_std([100 * (m["segm.AP"] - m["bbox.AP"]) for m in runs])
            differences[variant.name] = (mean, std)
    return differences


def compare(ours: dict, reference: dict, variant: Variant) -> dict:
    """The gap between two {"mean", "std", "n"} (AP in 0..1), in points, with its standard error."""
    gap = 100 * (ours["mean"] - reference["mean"])
    error = 100 * math.sqrt(ours["std"] ** 2 / ours["n"] + reference["std"] ** 2 / reference["n"])
    within_spread = abs(gap) < 100 * max(ours["std"], reference["std"])
    result = {"metric": variant.metric, "reference": variant.compare_to, "gap": gap, "standard_error": error,
              "sigmas": gap / error if error > 0 else None,  # one seed each: no spread to measure
              "within_seed_spread": within_spread, "paper_gap": None, "paper_direction_held": None}
    if variant.paper is not None:
        result["paper_gap"] = variant.paper.difference
        result["paper_direction_held"] = (gap < 0) == (variant.paper.difference < 0) and gap != 0
    return result


def markdown_table(summary: dict, variants: list[Variant]) -> str:
    """The table of docs/ablations.md: mean ± std over seeds (AP × 100), then the comparison."""
    by_name = {v.name: v for v in variants}
    references = {v.compare_to for v in variants}
    header = ["variant", "seeds", *(LABELS[m] for m in METRICS), "gap (vs)", "σ of gap", "paper", "reading"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in summary.items():
        variant = by_name[name]
        cells = [f"`{name}`", str(len(row["seeds"]))]
        for metric in METRICS:
            untrained = variant.overrides.get("mask_loss") == "none" and metric.startswith("segm")
            mean, std = 100 * row[metric]["mean"], 100 * row[metric]["std"]
            cells.append("untrained" if untrained else f"{mean:.1f} ± {std:.1f}")
        comparison = row.get("comparison")
        if comparison is None:
            cells += ["—", "—", _paper_cell(variant), "reference" if name in references else "—"]
        else:
            sigmas = "—" if comparison["sigmas"] is None else f"{comparison['sigmas']:+.1f}"
            cells += [f"{comparison['gap']:+.1f} {LABELS[comparison['metric']]} (vs `{comparison['reference']}`)",
                      sigmas, _paper_cell(variant), _reading(comparison)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _paper_cell(variant: Variant) -> str:
    if variant.paper is None:
        return "—"
    p = variant.paper
    return f"{p.variant} vs {p.reference} ({p.difference:+.1f}; {p.setting})"


def _reading(comparison: dict) -> str:
    words = []
    if comparison["within_seed_spread"]:
        words.append("gap smaller than the seeds' spread")
    if comparison["gap"] == 0:
        words.append("no gap")
    elif comparison["paper_direction_held"] is not None:
        words.append("paper's direction" if comparison["paper_direction_held"] else "against the paper's direction")
    return "; ".join(words) or "—"
