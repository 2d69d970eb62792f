"""Studies: measured comparisons a researcher can cite, beside the leaderboard.

A leaderboard entry is one (protocol, method, backbone) and shows its newest record, so an ablation (a
learned policy against a fixed one, a temperature sweep, an initialisation against a random one at the same
small budget) cannot live there: each arm would supersede the last, and a short CPU reference would hide a
GPU record. A study is a folder of its own:

    studies/<slug>/study.json     {"title", "question", "baseline", "arms": [{"label", "record"}, ...],
                                   "anchor" (optional: what the papers report), "note" (optional)}
                                  an arm may name "against": another arm's label to pair with instead of
                                  the baseline (a learned temperature against the fixed one at the same
                                  teacher, where the baseline is no teacher at all); "reference": true marks
                                  an arm that is only paired against (a second method's or protocol's own
                                  random-init run), shown without a verdict of its own
    studies/<slug>/results/...    an ordinary results folder (records and checkpoints; `bench verify` and
                                   `bench compare` work on it as on any other)

Every arm is paired with the baseline arm (or its "against" arm) unit by unit (episodes, images, ...)
through the setting's own pairing, with the difference's 95% CI and the Wilcoxon signed-rank p-value that
ranks the leaderboard.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import InvalidRecord
from ..records import Record, format_ci, mean_ci
from ..stats.ranking import RANK_ALPHA, NotPairable, significantly_different
from .board import compare, record_with_units
from .tables import md_escape

STUDY_FILE = "study.json"
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class StudyError(ValueError):
    """A study folder whose study.json cannot be used: the message names the file and the fix."""


@dataclass(frozen=True)
class Arm:
    label: str
    record: str  # relative to the study folder
    against: str = ""  # the arm it is paired with; empty: the study's baseline
    reference: bool = False  # paired against by other arms, not itself compared


@dataclass
class Study:
    slug: str
    path: Path
    title: str
    question: str
    baseline: str
    arms: tuple[Arm, ...]
    anchor: str = ""
    note: str = ""
    problems: list[str] = field(default_factory=list)  # arms that could not be read or paired


def _text(spec: dict, key: str, where: Path, required: bool = True) -> str:
    value = spec.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise StudyError(f"{where}: '{key}' must be a non-empty string")
    return value


def read_study(folder: str | Path) -> Study:
    """A study's description, checked: every arm named once, the baseline one of them, records inside the
    folder (a study carries its evidence)."""
    folder = Path(folder)
    where = folder / STUDY_FILE
    if not SLUG.match(folder.name):
        raise StudyError(f"{folder}: a study folder's name must be a lowercase slug (letters, digits, '-')")
    try:
        spec = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(f"{where}: missing; a study folder describes itself in {STUDY_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StudyError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise StudyError(f"{where}: must hold a JSON object")
    raw_arms = spec.get("arms")
    if not isinstance(raw_arms, list) or len(raw_arms) < 2:
        raise StudyError(f"{where}: 'arms' must list at least two {{'label', 'record'}} objects")
    arms = []
    for i, arm in enumerate(raw_arms):
        if not isinstance(arm, dict):
            raise StudyError(f"{where}: arm {i} must be an object with 'label' and 'record'")
        label, record = _text(arm, "label", where), _text(arm, "record", where)
        rel = Path(record)
        if rel.is_absolute() or ".." in rel.parts:
            raise StudyError(f"{where}: arm {label!r}: record {record!r} must be a path inside the study folder")
        reference = arm.get("reference", False)
        if not isinstance(reference, bool):
            raise StudyError(f"{where}: arm {label!r}: 'reference' must be true or false")
        arms.append(Arm(label, record, _text(arm, "against", where, required=False), reference))
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise StudyError(f"{where}: arm labels must be distinct (got {labels})")
    baseline = _text(spec, "baseline", where)
    if baseline not in labels:
        raise StudyError(f"{where}: baseline {baseline!r} is not one of the arms {labels}")
    for arm in arms:
        if arm.reference and (arm.against or arm.label == baseline):
            raise StudyError(
                f"{where}: arm {arm.label!r}: a reference arm is not compared, so it takes no 'against' and is "
                f"not the baseline"
            )
        if arm.against and (arm.against not in labels or arm.against == arm.label):
            raise StudyError(
                f"{where}: arm {arm.label!r}: 'against' must be another arm's label, one of {labels} "
                f"(got {arm.against!r}); leave it out to pair with the baseline"
            )
    return Study(
        folder.name,
        folder,
        _text(spec, "title", where),
        _text(spec, "question", where),
        baseline,
        tuple(arms),
        _text(spec, "anchor", where, required=False),
        _text(spec, "note", where, required=False),
    )


def find_studies(root: str | Path) -> tuple[list[Study], list[str]]:
    """Every study under root (one folder each), and a warning per folder that could not be read."""
    root = Path(root)
    found: list[Study] = []
    warnings: list[str] = []
    if not root.is_dir():
        return found, warnings
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / STUDY_FILE).is_file()):
        try:
            found.append(read_study(folder))
        except StudyError as e:
            warnings.append(str(e))
    return found, warnings


def _arm_row(label: str, record: dict, vec: np.ndarray) -> dict:
    r = Record.from_dict(record)
    run = record["runs"][0]
    return {
        "Arm": label,
        "Method": r.method.name,
        "Protocol": f"{r.protocol.name} v{r.protocol.version}",
        "Accuracy (%)": format_ci(float(np.mean(vec)), mean_ci(vec).ci95, unicode=True),
        "Seeds": len(record["runs"]),
        "Steps": run.get("train_steps"),
        "Train time (s)": run.get("train_time_s"),
        "Device": r.device_label,
        "Record": record["run_id"],
    }


def study_table(study: Study) -> pd.DataFrame:
    """One row per arm: its accuracy, then its paired difference from the arm it is paired with (its
    `against`, else the baseline; mean and 95% CI over the units both scored), the Wilcoxon p-value and the
    verdict at the leaderboard's alpha. Arms that cannot be read or paired keep their row without the
    comparison and add a line to study.problems."""
    results = study.path / "results"
    loaded: dict[str, tuple[dict, np.ndarray]] = {}
    study.problems.clear()
    for arm in study.arms:
        try:
            loaded[arm.label] = record_with_units(study.path / arm.record, results)
        except (OSError, InvalidRecord) as e:
            study.problems.append(f"arm {arm.label!r}: {arm.record}: {e}")
    rows = []
    for arm in study.arms:
        if arm.label not in loaded:
            continue
        record, vec = loaded[arm.label]
        row = _arm_row(arm.label, record, vec)
        ref_label = arm.against or study.baseline
        row.update({"Paired with": "", "Δ (points)": "", "Wilcoxon p": None, "Verdict": ""})
        ref = loaded.get(ref_label)
        if arm.label == study.baseline:
            row["Verdict"] = "baseline"
        elif arm.reference:
            row["Verdict"] = "reference"
        elif ref is not None:
            row["Paired with"] = ref_label
            try:
                test = compare(record, ref[0], (vec, ref[1]))
            except NotPairable as e:
                study.problems.append(f"arm {arm.label!r} cannot be paired with {ref_label!r}: {e}")
            else:
                diff = mean_ci(vec - ref[1])
                row["Δ (points)"] = format_ci(diff.mean, diff.ci95, unicode=True, signed=True)
                row["Wilcoxon p"] = test.wilcoxon_pvalue
                if significantly_different(test):
                    row["Verdict"] = "better" if test.mean_diff > 0 else "worse"
                else:
                    row["Verdict"] = f"no significant difference (alpha {RANK_ALPHA})"
        rows.append(row)
    return pd.DataFrame(rows)


STUDIES_TEXT = (
    "Each study pairs its arms with its baseline arm (or the arm a row names under Paired with) on the units both "
    "scored (test episodes or images), as the leaderboard pairs methods: the difference's mean and 95% CI over "
    "those units, and the two-sided Wilcoxon signed-rank p-value. With one training seed an arm, that interval "
    "covers the test units, not the training run's own variance: a small difference between single-seed arms "
    "may not survive another seed. Arms are ablations (a learned against a fixed setting, the same small "
    "budget), so they live in the study's own results folder rather than on the leaderboard, where each would "
    "supersede the last."
)


def render(ui: Any, root: str | Path) -> None:
    """Every study under root on a Streamlit-like `ui` (the app passes `st`)."""
    found, warnings = find_studies(root)
    for warning in warnings:
        ui.warning(warning)
    if not found:
        ui.info(f"No studies under {md_escape(str(root))} (a study is a folder with a {STUDY_FILE}; see the README).")
        return
    ui.caption(STUDIES_TEXT)
    for study in found:
        ui.subheader(md_escape(study.title))
        ui.markdown(f"**Question.** {md_escape(study.question)}")
        ui.dataframe(
            study_table(study),
            hide_index=True,
            column_config={"Wilcoxon p": ui.column_config.NumberColumn(format="%.2g")},
            key=f"study-{study.slug}",
        )
        for problem in study.problems:
            ui.warning(problem)
        for label, text in (("What the papers report", study.anchor), ("Note", study.note)):
            if text:
                ui.caption(f"**{label}.** {md_escape(text)}")
        ui.caption(f"Folder: {md_escape(str(study.path))}")
