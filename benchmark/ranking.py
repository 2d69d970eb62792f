"""Leaderboard tables from result records, and ranks with ties.

`load(results_dir)` reads every record under a results folder into one pandas table (a row per
record) and a list of the records it had to leave out, each with the reason. `rank` then gives,
within each protocol, ranks with ties in the manner of the Meta-Dataset leaderboard: the entry
with the best mean accuracy, and every entry not significantly different from it, share rank 1;
the rule is applied again to the entries left over for rank 2, and so on.

The Streamlit page (leaderboards/app.py) only lays out what the functions here compute, so that
everything a reader of the leaderboard relies on can be unit-tested without a browser.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from benchmark.results import iter_records, record_path
from benchmark.stats import PairedTest, mean_ci, paired_test

# Per-episode accuracies are bounded, discrete (multiples of 1 / (ways * queries)) and often
# skewed near the ceiling, so a paired t-test's normality assumption is doubtful, above all on
# short protocols; the signed-rank test needs only symmetric differences. We never fall back to
# the t-test: paired_test already handles the one case Wilcoxon cannot (all differences zero).
RANK_TEST = "two-sided Wilcoxon signed-rank test"
RANK_TEST_KEY = "wilcoxon_pvalue"
RANK_ALPHA = 0.05
RANKING_RULE = (
    f"Ranks with ties, within each protocol: the entry with the highest mean accuracy and every "
    f"entry not significantly different from it ({RANK_TEST}, paired by test episode on per-episode "
    f"accuracy averaged over training seeds, α = {RANK_ALPHA}) share rank 1; the rule is repeated on "
    f"the remaining entries for rank 2, and so on. There is no correction for multiple comparisons. "
    f"Only entries evaluated on the same test episodes (same protocol version and episodes "
    f"fingerprint) are ranked together; the others are shown unranked with a note."
)

# Two decimals of a percentage is what the page shows; a recorded interval that differs from
# the one its own accuracies give by less than that cannot mislead anyone, and tolerating it
# spares records whose writer rounded.
CI_TOLERANCE = 1e-4

DEFAULT_SETTINGS = ("few-shot", "cross-domain", "continual")

# A leaderboard entry: results for another backbone or protocol version are a different entry,
# not an update of this one.
ENTRY_KEY = ["setting", "protocol", "version", "method", "backbone"]

COLUMNS = [
    "setting", "protocol", "version", "method", "kind", "backbone", "entry", "ways", "shots",
    "queries", "image_size", "datasets", "family", "test_split", "mean", "ci95", "seed_ci95",
    "n_episodes", "n_seeds", "train_time_s", "eval_time_s", "total_time_s", "device", "created",
    "episodes_fingerprint", "path", "run_id", "latest", "superseded_by", "rank", "p_vs_leader",
    "rank_note",
]


class NotPairable(ValueError):
    """Two records that were not evaluated on the same test episodes."""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Board:
    table: pd.DataFrame
    warnings: list[Skipped] = field(default_factory=list)
    records: dict[str, dict] = field(default_factory=dict)  # keyed by the table's "path"

    @property
    def settings(self) -> list[str]:
        return settings_to_show(self.table)


@dataclass(frozen=True)
class Ranked:
    rank: int
    p_vs_leader: float  # NaN for the leader of its rank
    leader: int  # index, in the input, of the entry this one was tested against


# ----------------------------------------------------------------------------- per record

def episode_means(record: dict) -> np.ndarray:
    """Each test episode's accuracy averaged over the record's training seeds."""
    return np.asarray([r["episode_accuracies"] for r in record["runs"]], dtype=np.float64).mean(axis=0)


def consistency_problem(record: dict, path: Path | None = None, results_dir: Path | None = None) -> str | None:
    """What results.validate cannot see but a ranked table relies on; None when all is well."""
    counts = {len(r["episode_accuracies"]) for r in record["runs"]}
    if len(counts) != 1:
        return f"seeds were evaluated on different numbers of episodes ({sorted(counts)})"
    n = counts.pop()
    summary, protocol = record["summary"], record["protocol"]
    if summary["n_episodes"] != n:
        return f"summary n_episodes={summary['n_episodes']} but each seed has {n} episode accuracies"
    if protocol["test_episodes"] != n:
        return f"protocol has {protocol['test_episodes']} test episodes but {n} were evaluated"
    problem = _interval_problem("ci95", summary.get("ci95"), episode_means(record))
    if problem:
        return problem
    if "seed_ci95" in summary:
        problem = _interval_problem("seed_ci95", summary["seed_ci95"], [r["mean"] for r in record["runs"]])
        if problem:
            return problem
    if pd.isna(pd.to_datetime(record["created"], utc=True, errors="coerce")):
        return f"created {record['created']!r} is not an ISO date-time"
    if path is not None and results_dir is not None:
        expected = record_path(Path(results_dir), record)
        if Path(path).resolve() != expected.resolve():
            return f"misfiled: its contents say it belongs at {expected.relative_to(results_dir).as_posix()}"
    return None


def _interval_problem(name: str, recorded: float | None, values: Sequence[float]) -> str | None:
    expected = mean_ci(values).ci95
    if recorded is None or (isinstance(recorded, float) and math.isnan(recorded)):
        return None if math.isnan(expected) else f"summary {name} is missing although it can be computed"
    if math.isnan(expected):
        return f"summary {name}={recorded} but a single value has no interval"
    if abs(recorded - expected) > CI_TOLERANCE:
        return f"summary {name}={recorded:.6f} does not match its accuracies ({expected:.6f})"
    return None


def _row(record: dict, path: str) -> dict:
    p, m, s = record["protocol"], record["method"], record["summary"]
    backbone = m.get("backbone") or "—"
    datasets = list(p.get("datasets") or [])
    runs = record["runs"]
    train = s.get("train_time_s", sum(r["train_time_s"] for r in runs))
    evaluate = s.get("eval_time_s", sum(r["eval_time_s"] for r in runs))
    dev = record["device"]
    device = dev["type"] + (f" ({dev['name']})" if dev.get("name") else "")
    seed_ci = mean_ci([r["mean"] for r in runs]).ci95
    return {
        "setting": p["setting"], "protocol": p["name"], "version": p["version"], "method": m["name"],
        "kind": record["kind"], "backbone": backbone, "entry": f"{m['name']} · {backbone}",
        "ways": p["ways"], "shots": p["shots"], "queries": p["queries"], "image_size": p["image_size"],
        "datasets": ", ".join(datasets), "family": f"{' + '.join(datasets) or p['name']} · {p['ways']}-way",
        "test_split": p["test_split"], "mean": s["mean"], "ci95": mean_ci(episode_means(record)).ci95,
        "seed_ci95": seed_ci, "n_episodes": s["n_episodes"], "n_seeds": s["n_seeds"],
        "train_time_s": float(train), "eval_time_s": float(evaluate), "total_time_s": float(train) + float(evaluate),
        "device": device, "created": pd.to_datetime(record["created"], utc=True),
        "episodes_fingerprint": p["episodes_fingerprint"], "path": path, "run_id": record["run_id"],
    }


# ----------------------------------------------------------------------------- loading

def load(results_dir: str | Path, latest_only: bool = True) -> Board:
    """Every record under results_dir as a ranked table; the ones left out go to warnings.

    With latest_only (the default) only the most recent record of each entry (protocol, version,
    method, backbone) is kept; otherwise older ones are listed too, unranked, as superseded.
    """
    results_dir = Path(results_dir)
    rows, records, skipped = [], {}, []
    if results_dir.is_dir():
        for path, record, error in iter_records(results_dir):
            rel = path.relative_to(results_dir).as_posix()
            if error is None:
                error = consistency_problem(record, path, results_dir)
            if error is not None:
                skipped.append(Skipped(rel, error))
                continue
            rows.append(_row(record, rel))
            records[rel] = record
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = _mark_latest(table)
    if latest_only:
        table = table[table["latest"]].reset_index(drop=True)
    return Board(rank(table, records), skipped, records)


def _mark_latest(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["latest"] = True
    table["superseded_by"] = None
    if table.empty:
        return table.astype({"latest": bool})
    # run_id breaks ties between records written in the same second, so the choice is stable.
    order = table.sort_values(["created", "run_id"], ascending=False)
    for _, group in order.groupby(ENTRY_KEY, sort=False, dropna=False):
        newest = group.index[0]
        for i in group.index[1:]:
            table.at[i, "latest"] = False
            table.at[i, "superseded_by"] = table.at[newest, "run_id"]
    return table.astype({"latest": bool})


def settings_to_show(table: pd.DataFrame) -> list[str]:
    """The three main settings always get a tab (saying when empty), others when they have results."""
    extra = sorted(set(table["setting"]) - set(DEFAULT_SETTINGS)) if len(table) else []
    return [*DEFAULT_SETTINGS, *extra]


# ----------------------------------------------------------------------------- comparing

def pairing_problem(a: dict, b: dict) -> str | None:
    """Why two records cannot be compared episode by episode; None when they can."""
    pa, pb = a["protocol"], b["protocol"]
    if pa["name"] != pb["name"]:
        return f"different protocols ({pa['name']} vs {pb['name']})"
    if pa["version"] != pb["version"]:
        return f"different protocol versions (v{pa['version']} vs v{pb['version']})"
    if pa["episodes_fingerprint"] != pb["episodes_fingerprint"]:
        return "different test episodes (episodes fingerprints differ)"
    na, nb = a["summary"]["n_episodes"], b["summary"]["n_episodes"]
    if na != nb or len(a["runs"][0]["episode_accuracies"]) != len(b["runs"][0]["episode_accuracies"]):
        return f"different numbers of test episodes ({na} vs {nb})"
    return None


def compare(record_a: dict, record_b: dict) -> PairedTest:
    """Paired test of a against b (mean_diff is a - b) on their seed-averaged episode accuracies."""
    problem = pairing_problem(record_a, record_b)
    if problem:
        raise NotPairable(problem)
    return paired_test(episode_means(record_a), episode_means(record_b))


def significantly_different(test: PairedTest, alpha: float = RANK_ALPHA) -> bool:
    p = getattr(test, RANK_TEST_KEY)
    # A p-value that cannot be computed is no evidence of a difference.
    return bool(p < alpha) if not math.isnan(p) else False


def rank_records(records: Sequence[dict], alpha: float = RANK_ALPHA) -> list[Ranked]:
    """Ranks with ties for records that were all evaluated on the same episodes (input order kept)."""
    for r in records[1:]:
        problem = pairing_problem(records[0], r)
        if problem:
            raise NotPairable(f"{records[0]['run_id']} and {r['run_id']}: {problem}")
    return rank_vectors([episode_means(r) for r in records], [r["summary"]["mean"] for r in records],
                        [r["method"]["name"] for r in records], alpha)


def rank_vectors(vectors: Sequence[np.ndarray], means: Sequence[float], names: Sequence[str],
                 alpha: float = RANK_ALPHA) -> list[Ranked]:
    out: list[Ranked | None] = [None] * len(vectors)
    remaining = list(range(len(vectors)))
    rank = 0
    while remaining:
        rank += 1
        # Equal means are broken by name only so that the outcome does not depend on file order.
        leader = min(remaining, key=lambda i: (-means[i], names[i]))
        out[leader] = Ranked(rank, math.nan, leader)
        tied = [leader]
        for i in remaining:
            if i == leader:
                continue
            with warnings.catch_warnings():
                # scipy warns when the differences are all alike (the t-test's spread is ~0);
                # ranking uses only the signed-rank p-value, so the warning is noise here.
                warnings.simplefilter("ignore", RuntimeWarning)
                test = paired_test(vectors[leader], vectors[i])
            if not significantly_different(test, alpha):
                out[i] = Ranked(rank, getattr(test, RANK_TEST_KEY), leader)
                tied.append(i)
        remaining = [i for i in remaining if i not in tied]
    return out  # type: ignore[return-value]


def rank(table: pd.DataFrame, records: dict[str, dict], alpha: float = RANK_ALPHA) -> pd.DataFrame:
    """Fill rank, p_vs_leader and rank_note for the rows given, protocol by protocol.

    Only the rows given are ranked against each other, so calling this on a filtered table ranks
    within the filter. Superseded rows are never ranked: an entry must not tie with itself.
    """
    table = table.copy()
    table["rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table["p_vs_leader"] = np.nan
    table["rank_note"] = ""
    if table.empty:
        return table
    for _, group in table.groupby(["setting", "protocol"], sort=False):
        current = group[group["latest"]]
        for i in group.index.difference(current.index):
            table.at[i, "rank_note"] = f"unranked: superseded by run {table.at[i, 'superseded_by']}"
        if current.empty:
            continue
        reference = _reference_episodes(current)
        keys = list(zip(current["version"], current["episodes_fingerprint"], current["n_episodes"]))
        members = [i for i, k in zip(current.index, keys) if k == reference]
        for i, k in zip(current.index, keys):
            if k != reference:
                table.at[i, "rank_note"] = (
                    f"unranked: not paired-comparable with the ranked entries (protocol v{k[0]}, "
                    f"episodes {k[1][:12]}, {k[2]} episodes; ranked: v{reference[0]}, "
                    f"episodes {reference[1][:12]}, {reference[2]} episodes)")
        ranked = rank_vectors([episode_means(records[table.at[i, "path"]]) for i in members],
                              [table.at[i, "mean"] for i in members],
                              [table.at[i, "entry"] for i in members], alpha)
        for i, r in zip(members, ranked):
            table.at[i, "rank"] = r.rank
            table.at[i, "p_vs_leader"] = r.p_vs_leader
            if not math.isnan(r.p_vs_leader):
                leader = table.at[members[r.leader], "entry"]
                table.at[i, "rank_note"] = f"tied with {leader} (p = {r.p_vs_leader:.3g})"
    return table


def _reference_episodes(rows: pd.DataFrame) -> tuple:
    """The test episodes a protocol's ranking is based on: newest version, then the most entries."""
    newest = rows[rows["version"] == rows["version"].max()]
    counts = newest.groupby(["version", "episodes_fingerprint", "n_episodes"]).agg(
        entries=("path", "size"), last=("created", "max"))
    return counts.sort_values(["entries", "last"], ascending=False).index[0]


# ----------------------------------------------------------------------------- page helpers

def filter_table(table: pd.DataFrame, ways: Iterable[int] = (), shots: Iterable[int] = (),
                 backbones: Iterable[str] = (), datasets: Iterable[str] = ()) -> pd.DataFrame:
    """Rows matching every non-empty filter; a record matches a dataset if it uses it at all."""
    keep = pd.Series(True, index=table.index)
    if ways := set(ways):
        keep &= table["ways"].isin(ways)
    if shots := set(shots):
        keep &= table["shots"].isin(shots)
    if backbones := set(backbones):
        keep &= table["backbone"].isin(backbones)
    if datasets := set(datasets):
        keep &= table["datasets"].map(lambda s: bool(datasets & set(split_datasets(s))))
    return table[keep]


def split_datasets(joined: str) -> list[str]:
    return [d for d in joined.split(", ") if d]


def filter_options(table: pd.DataFrame) -> dict[str, list]:
    return {
        "ways": sorted(table["ways"].unique().tolist()),
        "shots": sorted(table["shots"].unique().tolist()),
        "backbones": sorted(table["backbone"].unique().tolist()),
        "datasets": sorted({d for s in table["datasets"] for d in split_datasets(s)}),
    }


_MARKDOWN_SPECIAL = set("\\`*_{}[]()<>#+-.!|~$:")


def md_escape(text: str) -> str:
    """Record strings as literal text in Streamlit markdown, where `_` italicises, `$` starts
    LaTeX and `:name:` is an emoji; record contents are data, not page markup."""
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in str(text))


def percent_ci(mean: float, ci95: float) -> str:
    if ci95 is None or (isinstance(ci95, float) and math.isnan(ci95)):
        return f"{100 * mean:.2f} ± n/a"
    return f"{100 * mean:.2f} ± {100 * ci95:.2f}"


DISPLAY_COLUMNS = ["Rank", "Method", "Backbone", "Accuracy (%)", "Mean (%)", "CI95 (%)", "Seed CI95 (%)",
                   "Episodes", "Seeds", "Train time (s)", "Eval time (s)", "Device", "Date", "Kind",
                   "Note", "Run"]


def display_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One protocol's rows as the page shows them: best rank first, percentages, plain labels.

    "Accuracy (%)" is text ("mean ± CI") for reading; "Mean (%)" carries the same number as a
    number so that sorting the column sorts by accuracy rather than alphabetically.
    """
    rows = rows.sort_values(["rank", "mean"], ascending=[True, False], na_position="last")
    return pd.DataFrame({
        "Rank": rows["rank"].astype("Int64"),
        "Method": rows["method"],
        "Backbone": rows["backbone"],
        "Accuracy (%)": [percent_ci(m, c) for m, c in zip(rows["mean"], rows["ci95"])],
        "Mean (%)": (100 * rows["mean"]).round(2),
        "CI95 (%)": (100 * rows["ci95"]).round(2),
        "Seed CI95 (%)": (100 * rows["seed_ci95"]).round(2),
        "Episodes": rows["n_episodes"],
        "Seeds": rows["n_seeds"],
        "Train time (s)": rows["train_time_s"].round(1),
        "Eval time (s)": rows["eval_time_s"].round(1),
        "Device": rows["device"],
        "Date": rows["created"].dt.strftime("%Y-%m-%d %H:%M"),
        "Kind": rows["kind"],
        "Note": rows["rank_note"],
        "Run": rows["run_id"],
    }).reset_index(drop=True)


def to_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)


def to_json(table: pd.DataFrame) -> str:
    # pandas writes NA/NaN as null, which is what a JSON reader expects for "no value".
    return json.dumps(json.loads(table.to_json(orient="records", date_format="iso")), indent=1)


def shots_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) against shots, one line per entry, with the CI as low/high."""
    return _with_bounds(rows[["entry", "protocol", "shots", "mean", "ci95", "n_episodes"]])


def compute_scatter(rows: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) against train + eval seconds, one point per record."""
    out = _with_bounds(rows[["entry", "protocol", "mean", "ci95", "train_time_s", "eval_time_s",
                             "total_time_s", "device"]])
    # Compute goes on a log axis, which cannot show zero; a hundredth of a second is "no time".
    out["total_time_s"] = out["total_time_s"].clip(lower=0.01)
    return out


def _with_bounds(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    ci = out["ci95"].fillna(0.0)
    out["accuracy"] = 100 * out["mean"]
    out["low"] = 100 * (out["mean"] - ci)
    out["high"] = 100 * (out["mean"] + ci)
    out["ci95"] = 100 * ci
    return out.drop(columns=["mean"])


def record_label(row: pd.Series) -> str:
    return f"{row['protocol']} · {row['entry']} · {row['run_id']}"


def provenance(record: dict) -> dict:
    """What a reader needs to judge or reproduce a result, from the record itself."""
    out = {
        "run_id": record["run_id"],
        "kind": record["kind"],
        "created": record["created"],
        "seeds": record["seeds"],
        "method": record["method"]["name"],
        "backbone": record["method"].get("backbone"),
        "hparams": record["method"]["hparams"],
        "protocol": {k: record["protocol"][k] for k in
                     ("name", "version", "ways", "shots", "queries", "image_size", "test_split",
                      "test_episodes", "episodes_fingerprint") if k in record["protocol"]},
        "git_commit": record["code"].get("git_commit"),
        "git_dirty": record["code"].get("git_dirty"),
        "data_fingerprints": record["data"],
        "environment": record["environment"],
        "device": record["device"],
        "per_seed": [{"seed": r["seed"], "mean": r["mean"], "train_steps": r["train_steps"],
                      "train_time_s": r["train_time_s"], "eval_time_s": r["eval_time_s"],
                      "checkpoint": r.get("checkpoint")} for r in record["runs"]],
    }
    if "source" in record["method"]:
        out["source"] = record["method"]["source"]
    if record.get("notes"):
        out["notes"] = record["notes"]
    return out


def episode_histogram(record: dict) -> pd.DataFrame:
    return pd.DataFrame({"accuracy": 100 * episode_means(record)})
