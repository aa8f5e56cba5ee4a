"""Train the paper's ablations on your data, with several seeds each, and tabulate them.

    python -m mrcnn_from_scratch.ablate --data datasets/shapes --out runs/ablations --seeds 3 --iters 600 --jobs 2

Every (variant, seed) is one run of `python -m mrcnn_from_scratch train` (the small config, its recipe,
with the variant's --set switches) in OUT/VARIANT/seedS. Runs with the same seed share the data order
and the backbone's first weights, so a variant differs from the baseline only by its switch. Each run
ends with a pycocotools evaluation on the val split (train's last validation), and OUT/VARIANT/seedS/
result.json records it. Running the command again skips the runs that have a result and continues the
ones that were cut short from their checkpoint (--resume). At the end, OUT/ablations.json holds every
run and the summary, OUT/ablations.md the table (ablation_table.py).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from .ablation_table import METRICS, markdown_table, summarize
from .ablation_variants import VARIANTS, Variant


def run_command(data: Path, run_dir: Path, overrides: dict, seed: int, iters: int) -> list[str]:
    """The train command of one run: one thread and no loader process, so that --jobs runs fit as many cores."""
    switches = [f"{name}={value}" for name, value in overrides.items()]
    return [sys.executable, "-m", "mrcnn_from_scratch", "train", "--data", str(data), "--out", str(run_dir),
            "--config", "small", "--iters", str(iters), "--seed", str(seed), "--val-every", "0", "--workers", "0",
            "--threads", "1", "--resume", *(["--set", *switches] if switches else [])]


def train_one(data: Path, out: Path, variant: Variant, seed: int, iters: int) -> dict:
    """Train and evaluate one (variant, seed), or read its result if it is done. Returns the result."""
    name = variant.name
    run_dir = out / name / f"seed{seed}"
    result_path = run_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(run_dir / "train.log", "a") as log:
        finished = subprocess.run(run_command(data, run_dir, variant.overrides, seed, iters), stdout=log,
                                  stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if finished.returncode != 0:
        tail = (run_dir / "train.log").read_text().replace("\r", "\n").strip().splitlines()[-5:]
        raise RuntimeError(f"{name} seed {seed} failed (exit {finished.returncode}); the end of "
                           f"{run_dir / 'train.log'}:\n" + "\n".join(tail))
    validations = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [v for v in validations if v["type"] == "val"][-1]
    result = {"variant": name, "seed": seed, "iters": iters, "overrides": variant.overrides,
              "metrics": {metric: final[metric] for metric in METRICS},
              "train_seconds": [v["seconds"] for v in validations if v["type"] == "train"][-1],
              "wall_seconds": round(time.perf_counter() - started, 1)}
    result_path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def variants_named(names: list[str]) -> list[Variant]:
    """VARIANTS by name, in the table's order; ValueError listing the known names for an unknown one."""
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    return [VARIANTS[name] for name in VARIANTS if name in names]


def run_ablations(data: str | Path, out: str | Path, variants: list[Variant], seeds: int, iters: int, jobs: int = 1,
                  progress: bool = True, command: str | None = None) -> dict:
    """Train every (variant, seed) not done yet, `jobs` at a time; write and return OUT/ablations.json.
    `progress`: a progress bar, and a line for each finished run; `command`: the command line, to record.

    A variant is measured against its reference (`compare_to`, one of VARIANTS), which is trained too.
    """
    data, out = Path(data), Path(out)
    names = [v.name for v in variants]
    references = [VARIANTS[v.compare_to] for v in variants if v.compare_to and v.compare_to not in names]
    needed = [*[r for r in VARIANTS.values() if r in references], *variants]
    started = time.perf_counter()
    results, failures = [], []
    bar = tqdm(total=len(needed) * seeds, desc="ablations", unit="run", disable=not progress)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(train_one, data, out, variant, seed, iters): (variant.name, seed)
                   for seed in range(seeds) for variant in needed}
        for future in as_completed(futures):
            name, seed = futures[future]
            try:
                result = future.result()
            except RuntimeError as error:
                failures.append(str(error))
                tqdm.write(str(error))
            else:
                results.append(result)
                if progress:
                    tqdm.write(f"{name} seed {seed}: mask AP {result['metrics']['segm.AP']:.3f}, box AP "
                               f"{result['metrics']['bbox.AP']:.3f} ({result['wall_seconds']:.0f} s)")
            bar.update()
    bar.close()
    order = [v.name for v in needed]
    results.sort(key=lambda r: (order.index(r["variant"]), r["seed"]))
    summary = summarize(results, needed)
    report = {"command": command, "data": str(data), "seeds": seeds, "iters": iters, "jobs": jobs,
              "wall_seconds_this_call": round(time.perf_counter() - started, 1),
              "run_wall_seconds_total": round(sum(r["wall_seconds"] for r in results), 1),
              "runs": results, "summary": summary}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablations.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "ablations.md").write_text(markdown_table(summary, needed))
    if failures:
        raise RuntimeError(f"{len(failures)} runs failed; run the same command again to retry them")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mrcnn_from_scratch.ablate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder in COCO layout (train and val splits)")
    parser.add_argument("--out", required=True, help="folder for the runs and the table")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant, 0..N-1 (default: 3)")
    parser.add_argument("--iters", type=int, default=600, help="training iterations per run (default: 600)")
    parser.add_argument("--only", nargs="+", default=list(VARIANTS), metavar="NAME",
                        help=f"variants to run (default: all): {', '.join(VARIANTS)}")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, one CPU thread each: up to the number of cores (default: 1)")
    args = parser.parse_args(argv)
    if min(args.seeds, args.iters, args.jobs) < 1:
        parser.error("--seeds, --iters and --jobs must be at least 1")
    try:
        variants = variants_named(args.only)
        command = " ".join(["python -m mrcnn_from_scratch.ablate", *(argv if argv is not None else sys.argv[1:])])
        report = run_ablations(args.data, args.out, variants, args.seeds, args.iters, args.jobs, command=command)
    except (ValueError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    print(markdown_table(report["summary"], variants))
    print(f"{len(report['runs'])} runs; this call took {report['wall_seconds_this_call'] / 60:.1f} min "
          f"(all runs together, {report['run_wall_seconds_total'] / 60:.1f} min of run time); "
          f"{Path(args.out) / 'ablations.md'}")


if __name__ == "__main__":
    main()
