"""The domain-generalisation table as DomainBed prints it: a row per method, a column per held-out target domain
and their average, computed without Streamlit."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..protocols import PROTOCOLS
from ..stats.ranking import average_ranks
from .tables import percent_ci

SELECTION_TEXT = (
    "Model selection: training-domain validation (DomainBed's default): a fixed 20% of every source domain is "
    "held out, and the checkpoint with the best mean accuracy on it is the one scored on every image of the target "
    "domain, which no part of training or selection sees."
)
ORACLE_TEXT = (
    "Oracle (test-domain validation), not a fair comparison: the checkpoint best on a fixed 20% of the target "
    "domain, scored on the other 80%. DomainBed reports it beside the real figure as an upper bound on what model "
    "selection could give; it is shown apart and never ranked."
)


def target_label(protocol: str, family: str) -> str:
    """ "pacs-dg-art-painting" in family "pacs-dg" -> "art-painting"."""
    return protocol[len(family) + 1 :] if protocol.startswith(family + "-") else protocol


def domain_table(rows: pd.DataFrame, oracle_of: Callable[[str], float | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(main table, oracle table) for one family of leave-one-domain-out protocols.

    Main cells: "mean ± CI (rank r)" per target, ranks with ties from the board. "Average": the mean over the
    targets with a CI from the targets' own (independent test sets: sqrt of the summed squared half-widths over
    the count), only for entries with every target. "Avg. rank": the mean of the per-target ranks. The oracle
    table has the oracle accuracy per target (`oracle_of(path)`: the record's summary oracle_mean) and its mean.
    """
    current = rows[rows["latest"].astype(bool)] if "latest" in rows.columns else rows
    family = family_of(str(current["protocol"].iloc[0]))
    targets = sorted(current["protocol"].unique())
    labels = [target_label(t, family) for t in targets]
    main, oracle = [], []
    for (method, backbone), group in current.groupby(["method", "backbone"], sort=True):
        chosen = group.sort_values(["version", "created"], ascending=False).drop_duplicates("protocol")
        by_target = {r["protocol"]: r for _, r in chosen.iterrows()}
        cells: dict[str, str | None] = {}
        oracle_cells: dict[str, str | None] = {}
        ranks: dict[str, int] = {}
        for t, label in zip(targets, labels):
            r = by_target.get(t)
            if r is None:
                cells[label] = oracle_cells[label] = None
                continue
            rank = "" if pd.isna(r["rank"]) else f" (rank {int(r['rank'])})"
            cells[label] = percent_ci(r["mean"], r["ci95"]) + rank
            if not pd.isna(r["rank"]):
                ranks[t] = int(r["rank"])
            o = oracle_of(r["path"])
            oracle_cells[label] = None if o is None else f"{100 * o:.2f}"
        complete = len(by_target) == len(targets)
        means = [by_target[t]["mean"] for t in targets if t in by_target]
        cis = [by_target[t]["ci95"] for t in targets if t in by_target]
        average = None
        if complete:
            ci = math.sqrt(sum(c * c for c in cis)) / len(cis) if all(not pd.isna(c) for c in cis) else None
            average = percent_ci(float(np.mean(means)), ci)
        avg_rank = average_ranks({0: ranks}).get(0, math.nan)
        main.append(
            {
                "Method": method,
                "Backbone": backbone,
                **cells,
                "Average": average,
                "Avg. rank": round(avg_rank, 2),
                "Targets": len(by_target),
            }
        )
        values = [float(v) for v in oracle_cells.values() if v is not None]
        oracle.append(
            {
                "Method": method,
                "Backbone": backbone,
                **oracle_cells,
                "Average": f"{np.mean(values):.2f}" if complete and len(values) == len(targets) else None,
            }
        )
    fixed = ["Method", "Backbone"]
    main_table = pd.DataFrame(main, columns=fixed + labels + ["Average", "Avg. rank", "Targets"])
    main_table = main_table.sort_values(["Avg. rank", "Targets"], ascending=[True, False], na_position="last")
    return main_table.reset_index(drop=True), pd.DataFrame(oracle, columns=fixed + labels + ["Average"])


def family_of(protocol: str) -> str:
    """A protocol's family ("pacs-dg"), as registered; its own name when this code does not know it."""
    return PROTOCOLS.get(protocol).family if protocol in PROTOCOLS else protocol


def domain_tables(
    rows: pd.DataFrame, oracle_of: Callable[[str], float | None]
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(family, main table, oracle table) for each family of leave-one-domain-out classification protocols among
    the rows (the episodic ones have their own table: shift_tables)."""
    rows = rows[rows["ways"].isna()]
    families = rows["protocol"].map(family_of)
    return [(fam, *domain_table(rows[families == fam], oracle_of)) for fam in sorted(families.unique())]


SHIFT_TEXT = (
    "Few-shot under domain shift. Target: accuracy on the fixed test episodes of the test characters at a rotation "
    "never seen in training (ranked, with ties, as in the protocol's table). Reference: the same episodes, the same "
    "characters and images, at a training rotation (0°). Drop: reference minus target, with the 95% CI of the "
    "per-episode differences (paired: the same episodes). Methods trained on the pooled rotations are the ERM "
    "reference; MLDG trains on episodes grouped by rotation."
)


def shift_tables(rows: pd.DataFrame, summary_of: Callable[[str], dict]) -> list[tuple[str, pd.DataFrame]]:
    """(family, table) for each family of episodic domain-generalisation protocols among the rows: per protocol
    and method, the target accuracy ± CI with its rank, the reference's, and the drop between them ± its
    paired CI (`summary_of(path)`: the record's summary, with reference_mean, reference_ci95 and drop_ci95)."""
    current = rows[rows["ways"].notna()]
    if "latest" in current.columns:
        current = current[current["latest"].astype(bool)]
    out = []
    columns = ["Protocol", "Rank", "Method", "Backbone", "Target (%)", "Reference (%)", "Drop (points)", "Seeds"]
    for family in sorted(current["protocol"].map(family_of).unique()):
        group = current[current["protocol"].map(family_of) == family]
        chosen = group.sort_values(["version", "created"], ascending=False).drop_duplicates(
            ["protocol", "method", "backbone"]
        )
        table = []
        for _, r in chosen.iterrows():
            s = summary_of(r["path"])
            drop = s["reference_mean"] - r["mean"]
            ci = s.get("drop_ci95")
            table.append(
                {
                    "Protocol": r["protocol"],
                    "Rank": None if pd.isna(r["rank"]) else int(r["rank"]),
                    "Method": r["method"],
                    "Backbone": r["backbone"],
                    "Target (%)": percent_ci(r["mean"], r["ci95"]),
                    "Reference (%)": percent_ci(s["reference_mean"], s.get("reference_ci95")),
                    "Drop (points)": f"{100 * drop:+.2f}" + ("" if ci is None else f" ± {100 * ci:.2f}"),
                    "Seeds": int(r["n_seeds"]),
                }
            )
        frame = pd.DataFrame(table, columns=columns).sort_values(["Protocol", "Rank", "Method"], na_position="last")
        frame["Rank"] = frame["Rank"].astype("Int64")
        out.append((family, frame.reset_index(drop=True)))
    return out
