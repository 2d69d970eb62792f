"""Studies: ablation arms paired with a baseline arm, read from a folder of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recordkit import make_record, paired_accuracies, write

from benchmark.page.studies import StudyError, find_studies, read_study, study_table


def _study(root: Path, means: dict[str, float], base: str, **extra) -> Path:
    folder = root / "temperature"
    results = folder / "results"
    accs = paired_accuracies(means, n=300, seed=1)
    arms = []
    for i, (label, acc) in enumerate(accs.items()):
        path = write(results, make_record("meta-kd", "omniglot-5w1s", acc, run_id=f"20250101T00000{i}Z-aaaaa{i}"))
        arms.append({"label": label, "record": path.relative_to(folder).as_posix()})
    spec = {"title": "A learned temperature", "question": "Does it help?", "baseline": base, "arms": arms}
    (folder / "study.json").write_text(json.dumps({**spec, **extra}))
    return folder


def test_arms_are_paired_with_the_baseline_and_judged_by_wilcoxon(tmp_path):
    folder = _study(tmp_path, {"fixed T=4": 0.80, "learned": 0.86, "T=1": 0.799}, base="fixed T=4")
    table = study_table(read_study(folder)).set_index("Arm")
    assert table.loc["fixed T=4", "Verdict"] == "baseline"
    assert table.loc["learned", "Verdict"] == "better" and table.loc["learned", "Wilcoxon p"] < 1e-6
    assert table.loc["learned", "Δ (points)"].startswith("+") and table.loc["learned", "Paired with"] == "fixed T=4"
    assert table.loc["T=1", "Verdict"].startswith("no significant difference")


def test_an_arm_can_be_paired_with_another_arm_than_the_baseline(tmp_path):
    folder = _study(tmp_path, {"no teacher": 0.70, "T=4": 0.80, "learned": 0.801}, base="no teacher")
    spec = json.loads((folder / "study.json").read_text())
    spec["arms"][2]["against"] = "T=4"  # learned against fixed at the same teacher, not against no teacher
    (folder / "study.json").write_text(json.dumps(spec))
    table = study_table(read_study(folder)).set_index("Arm")
    assert table.loc["T=4", "Paired with"] == "no teacher" and table.loc["T=4", "Verdict"] == "better"
    assert table.loc["learned", "Paired with"] == "T=4"
    assert table.loc["learned", "Verdict"].startswith("no significant difference")


def test_a_reference_arm_is_paired_against_but_not_compared(tmp_path):
    folder = _study(tmp_path, {"protonet": 0.70, "maml": 0.60, "maml-ssl": 0.66}, base="protonet")
    spec = json.loads((folder / "study.json").read_text())
    spec["arms"][1]["reference"] = True  # maml is there for maml-ssl, not to be ranked against protonet
    spec["arms"][2]["against"] = "maml"
    (folder / "study.json").write_text(json.dumps(spec))
    table = study_table(read_study(folder)).set_index("Arm")
    assert table.loc["maml", "Verdict"] == "reference" and table.loc["maml", "Paired with"] == ""
    assert table.loc["maml-ssl", "Verdict"] == "better" and table.loc["maml-ssl", "Paired with"] == "maml"


def test_an_arm_on_other_episodes_is_not_paired_and_says_why(tmp_path):
    folder = _study(tmp_path, {"a": 0.8, "b": 0.9}, base="a")
    other = write(
        folder / "results",
        make_record(
            "meta-kd", "omniglot-5w1s", [0.5] * 300, episodes_fingerprint="f" * 64, run_id="20250102T000000Z-bbbbbb"
        ),
    )
    spec = json.loads((folder / "study.json").read_text())
    spec["arms"].append({"label": "c", "record": other.relative_to(folder).as_posix()})
    (folder / "study.json").write_text(json.dumps(spec))
    study = read_study(folder)
    table = study_table(study).set_index("Arm")
    assert table.loc["c", "Verdict"] == "" and "cannot be paired" in study.problems[0]


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"baseline": "nobody"}, "is not one of the arms"),
        ({"arms": [{"label": "x", "record": "../elsewhere.json"}, {"label": "y", "record": "r.json"}]}, "inside"),
        ({"title": ""}, "'title' must be a non-empty string"),
        (
            {
                "baseline": "x",
                "arms": [{"label": "x", "record": "r.json"}, {"label": "y", "record": "r.json", "against": "y"}],
            },
            "'against' must be another arm's label",
        ),
        (
            {
                "baseline": "x",
                "arms": [{"label": "x", "record": "r.json"}, {"label": "y", "record": "r.json", "reference": 1}],
            },
            "'reference' must be true or false",
        ),
    ],
)
def test_a_bad_study_file_names_the_problem(tmp_path, change, needle):
    folder = _study(tmp_path, {"a": 0.8, "b": 0.9}, base="a", **change)
    with pytest.raises(StudyError, match=needle):
        read_study(folder)
    found, warnings = find_studies(tmp_path)
    assert found == [] and needle in warnings[0]  # the page shows a warning, not a traceback


def test_a_missing_record_keeps_the_other_arms(tmp_path):
    folder = _study(tmp_path, {"a": 0.8, "b": 0.9}, base="a")
    spec = json.loads((folder / "study.json").read_text())
    (folder / spec["arms"][1]["record"]).unlink()
    study = read_study(folder)
    table = study_table(study)
    assert list(table["Arm"]) == ["a"] and "arm 'b'" in study.problems[0]


def test_the_page_shows_each_study_with_its_verdicts(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _study(tmp_path / "studies", {"fixed": 0.80, "learned": 0.86}, base="fixed")
    (tmp_path / "studies" / "broken").mkdir()
    (tmp_path / "studies" / "broken" / "study.json").write_text("{not json")
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("BENCH_STUDIES_DIR", str(tmp_path / "studies"))
    app = Path(__file__).resolve().parents[1] / "leaderboards" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=60).run()
    assert not at.exception, at.exception
    tab = at.tabs[[t.label for t in at.tabs].index("Studies")]
    table = tab.dataframe[0].value.set_index("Arm")
    assert table.loc["learned", "Verdict"] == "better" and table.loc["fixed", "Verdict"] == "baseline"
    assert any("not valid JSON" in w.value for w in tab.warning)  # a broken study is named, the rest still shows


def test_every_shipped_study_reads_and_pairs_each_arm_with_its_baseline():
    root = Path(__file__).resolve().parents[1] / "studies"
    found, warnings = find_studies(root)
    assert not warnings, warnings
    described = [s for s in found if s.arms]
    assert described, "studies/ holds no study.json"
    for study in described:
        table = study_table(study)
        assert not study.problems, (study.slug, study.problems)
        assert len(table) == len(study.arms) and (table["Verdict"] == "baseline").sum() == 1, study.slug
        verdicts = ["baseline", "reference", "better", "worse", "no significant difference"]
        assert table["Verdict"].str.replace(r" \(alpha .*\)$", "", regex=True).isin(verdicts).all(), table
