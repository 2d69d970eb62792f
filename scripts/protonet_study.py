"""ProtoNet under a short budget: which design choice decides accuracy after a few hundred steps?

Each variant trains the built-in `protonet` on omniglot-5w1s for --steps steps (or --seconds of
wall time), once per seed, and scores the same fixed test episodes; records go to --out (not to
results/, so that these short runs stay off the leaderboard). The table gives each variant's mean and
95% CI over episodes and seeds, its training time, and the paired difference from the first variant.

    python scripts/protonet_study.py --data-dir DIR --out studies/protonet-short-budget
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import baselines  # noqa: F401  (registers the built-in methods)
from benchmark.records import format_ci, mean_ci
from benchmark.run import RunConfig
from benchmark.settings import evaluate

# Every variant names its distance: the Omniglot recipe's default changed to unsquared after this study.
VARIANTS = {
    "paper (60-way, squared, one pass)": {"distance": "sqeuclidean"},
    "5-way, squared, one pass": {"train_ways": 5, "distance": "sqeuclidean"},
    "5-way, unsquared, one pass": {"train_ways": 5, "distance": "euclidean"},
    "5-way, squared, two passes": {"train_ways": 5, "distance": "sqeuclidean", "embed": "separate"},
    "5-way, unsquared, two passes": {"train_ways": 5, "distance": "euclidean", "embed": "separate"},
    "60-way, unsquared, one pass": {"distance": "euclidean"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True, help="folder for the records and summary.json")
    ap.add_argument("--protocol", default="omniglot-5w1s")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=None, help="a wall-time budget instead of a step count")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    args = ap.parse_args()
    out = Path(args.out)
    rows = {}
    for label, hp in VARIANTS.items():
        if args.only and label not in args.only:
            continue
        cfg = RunConfig(
            "protonet",
            (args.protocol,),
            seeds=tuple(args.seeds),
            episodes=args.episodes,
            train_steps=100_000 if args.seconds else args.steps,
            max_train_time=args.seconds,
            device="cpu",
            hparams=hp,
            data_dir=args.data_dir,
            results_dir=str(out),
            select="final",
            progress=False,
        )
        ((record, path),) = evaluate(cfg, log=lambda s: None)
        accs = np.array([r["episode_accuracies"] for r in record["runs"]])  # [seeds, episodes]
        rows[label] = {
            "hparams": hp,
            "record": str(path),
            "per_seed": [round(100 * float(a.mean()), 2) for a in accs],
            "mean": float(accs.mean()),
            "ci95": mean_ci(accs.mean(0)).ci95,
            "train_steps": [r["train_steps"] for r in record["runs"]],
            "train_time_s": [r["train_time_s"] for r in record["runs"]],
            "units": accs.mean(0).tolist(),
        }
        r = rows[label]
        print(
            f"{label:<36} {format_ci(r['mean'], r['ci95'])}%  seeds {r['per_seed']}  "
            f"steps {r['train_steps']}  train {np.mean(r['train_time_s']):.0f}s/seed",
            flush=True,
        )
    first = next(iter(rows.values()))
    print(f"\npaired differences from '{next(iter(rows))}' (95% CI over episodes, seed-averaged):")
    for label, r in list(rows.items())[1:]:
        d = mean_ci(np.array(r["units"]) - np.array(first["units"]))
        print(f"  {label:<36} {format_ci(d.mean, d.ci95, signed=True)} points")
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "units"} for k, v in rows.items()}
    (out / "summary.json").write_text(json.dumps({"args": vars(args), "variants": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
