"""Users' own image folders as datasets (`bench data prepare --from-folder`) and protocol files
(`--protocol FILE`, `bench protocol add`), on tiny folders of PNGs made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.cli.main import main
from benchmark.core.errors import DataError
from benchmark.data import load_prepared
from benchmark.data.folder import prepare_folder
from benchmark.protocols import PROTOCOLS, added
from benchmark.protocols import files as pf

QUIET = {"log": lambda _m: None}


def write_images(folder: Path, n: int, seed: int = 0, size: int = 28) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def class_tree(root: Path, classes: int = 8, per_class: int = 4) -> Path:
    for c in range(classes):
        write_images(root / f"class{c}", per_class, seed=c)
    return root


def domain_tree(root: Path) -> Path:
    for d, dom in enumerate(("photo", "sketch")):
        for c in range(4):
            write_images(root / dom / f"kind{c}", 3, seed=10 * d + c)
    return root


@pytest.fixture(autouse=True)
def forget_file_protocols():
    yield
    for name in list(added._LOADED):
        added.unload(name)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One data dir with `mine` (class layout, 8 classes) and `doms` (2 domains x 4 classes)."""
    base = tmp_path_factory.mktemp("user")
    data = base / "data"
    prepare_folder(class_tree(base / "mine"), "mine", data, **QUIET)
    prepare_folder(domain_tree(base / "doms"), "doms", data, **QUIET)
    return base, data


def test_class_folder_becomes_a_prepared_dataset(tmp_path):
    src = class_tree(tmp_path / "src", classes=3, per_class=2)
    (src / ".DS_Store").write_bytes(b"junk")  # hidden files and folders are skipped
    (src / "class0" / ".hidden.png").write_bytes(b"not an image")
    (src / ".git").mkdir()
    (src / ".git" / "x.txt").write_text("skip")
    found = prepare_folder(src, "my-set", tmp_path / "data", **QUIET)
    m = found.manifest
    assert m["user"] is True and m["layout"] == "class" and m["domains"] == []
    assert m["class_names"] == ["class0", "class1", "class2"] and m["rows"] == 6
    assert len(m["source_sha256"]["tree"]) == 64 and m["files_sha256"]
    again = load_prepared("my-set", tmp_path / "data")  # by name, though not in DATASETS
    assert again.fingerprint == found.fingerprint
    ds = again.dataset()
    assert ds.column_names == ["image", "label"] and sorted(set(ds["label"])) == m["class_names"]


def test_domain_class_folder_is_detected(tmp_path):
    found = prepare_folder(domain_tree(tmp_path / "src"), "two-doms", tmp_path / "data", **QUIET)
    m = found.manifest
    assert m["layout"] == "domain/class" and m["domains"] == ["photo", "sketch"]
    assert m["class_names"] == [f"kind{c}" for c in range(4)] and "domain" in m["columns"]
    assert sorted(set(found.dataset()["domain"])) == ["photo", "sketch"]
    with pytest.raises(DataError, match="try --layout domain/class"):
        prepare_folder(tmp_path / "src", "as-classes", tmp_path / "data", layout="class", **QUIET)


def test_second_prepare_is_a_no_op_and_force_or_a_change_rebuilds(tmp_path):
    src, data = class_tree(tmp_path / "src", classes=2, per_class=2), tmp_path / "data"
    first = prepare_folder(src, "again", data, **QUIET)
    said = []
    second = prepare_folder(src, "again", data, log=said.append)
    assert "nothing to do" in said[-1] and second.manifest == first.manifest
    said.clear()
    prepare_folder(src, "again", data, force=True, log=said.append)
    assert said[-1].startswith("prepared again")
    write_images(src / "class1", 3, seed=7)  # a changed folder is prepared again
    said.clear()
    changed = prepare_folder(src, "again", data, log=said.append)
    assert said[-1].startswith("prepared again") and changed.manifest["rows"] == 5
    assert changed.manifest["source_sha256"] != first.manifest["source_sha256"]
    assert not list(data.glob(".again.tmp-*"))


def _prepare_cli(src, name, data, capsys) -> tuple[int, str]:
    rc = main(["data", "prepare", "--from-folder", str(src), name, "--data-dir", str(data)])
    return rc, capsys.readouterr().err


def test_prepare_errors_are_clear(tmp_path, capsys):
    data = tmp_path / "data"
    (tmp_path / "empty").mkdir()
    rc, err = _prepare_cli(tmp_path / "empty", "empty", data, capsys)
    assert rc == 2 and "holds no class folders" in err

    few = class_tree(tmp_path / "few", classes=3, per_class=2)
    (few / "class1" / "img1.png").unlink()
    rc, err = _prepare_cli(few, "few", data, capsys)
    assert rc == 2 and "fewer than 2 images" in err and "class1: 1" in err

    bad = class_tree(tmp_path / "bad", classes=2, per_class=2)
    (bad / "class0" / "notes.png").write_text("this is not a picture")
    rc, err = _prepare_cli(bad, "bad", data, capsys)
    assert rc == 2 and "not images PIL can open" in err and str(bad / "class0" / "notes.png") in err
    assert not (data / "bad").exists()

    rc, err = _prepare_cli(bad, "omniglot", data, capsys)
    assert rc == 2 and "built-in dataset" in err
    rc, err = _prepare_cli(bad, "My Data", data, capsys)
    assert rc == 2 and "not a lower-case slug" in err


def test_bench_list_shows_user_datasets(prepared, capsys):
    _, data = prepared
    assert main(["list", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    tail = out[out.index("datasets (prepared in") :]
    assert "omniglot" in tail and tail.index("doms") > tail.index("omniglot")
    assert "yours: 32 images, 8 classes" in tail and "2 domains" in tail


RATIO_TOML = """\
name = "mine-2w1s"
version = 1
setting = "few-shot"
description = "my eight classes, 2-way 1-shot"
dataset = "mine"
ways = 2
shots = 1
queries = 2
image_size = 28
test_episodes = 20
train_steps = 5

[classes]
ratio = [0.5, 0.25, 0.25]
seed = 0
"""

LIST_YAML = """\
name: doms-photo-to-sketch
version: 1
setting: few-shot
description: train on photos of two kinds, test on sketches of two others
dataset: doms
ways: 2
shots: 1
queries: 1
image_size: 28
channels: 1
domains: {train: [photo], test: [sketch]}
classes:
  train: [kind0, kind1]
  test: [kind2, kind3]
"""


def test_ratio_split_toml_protocol(prepared, tmp_path):
    _, data = prepared
    path = tmp_path / "mine.toml"
    path.write_text(RATIO_TOML)
    p = pf.read(path, data)
    parts = {k: s.classes for k, s in (("train", p.train), ("val", p.val), ("test", p.test))}
    assert [len(v) for v in parts.values()] == [4, 2, 2]
    assert sorted(sum(parts.values(), ())) == [f"class{c}" for c in range(8)]
    assert pf.read(path, data) == p  # deterministic
    assert pf.ratio_split([f"class{c}" for c in range(8)], [0.5, 0.25, 0.25], 0) == parts
    assert pf.ratio_split([f"class{c}" for c in range(8)], [0.5, 0.25, 0.25], 1) != parts
    assert (p.episode_spec.ways, p.episode_spec.queries, p.channels, p.test_episodes) == (2, 2, 3, 20)
    assert p.summary()["source"] == {"file": str(path), "sha256": pf.sha256_bytes(path.read_bytes())}
    assert "source" not in PROTOCOLS.get("omniglot-5w1s").summary()  # built-ins are unchanged


def test_list_split_yaml_protocol_with_domains(prepared, tmp_path):
    _, data = prepared
    path = tmp_path / "doms.yaml"
    path.write_text(LIST_YAML)
    assert added.resolve([str(path)], data) == ["doms-photo-to-sketch"]
    p = PROTOCOLS.get("doms-photo-to-sketch")
    assert p.train.where == (("domain", ("photo",)),) and p.test.where == (("domain", ("sketch",)),)
    assert p.train.classes == ("kind0", "kind1") and p.val is None and p.channels == 1


def test_cross_domain_file(prepared, tmp_path):
    _, data = prepared
    path = tmp_path / "cross.toml"
    path.write_text(
        'name = "mine-to-sketch"\nversion = 1\nsetting = "cross-domain"\ndescription = "x"\n'
        'train_dataset = "mine"\ntest_dataset = "doms"\nways = 2\nshots = 1\nimage_size = 28\n'
        '[domains]\ntest = ["sketch"]\n[classes]\nratio = [0.75, 0.25]\n'
    )
    p = pf.read(path, data)
    assert (len(p.train.classes), len(p.val.classes)) == (6, 2) and p.datasets == ("mine", "doms")
    assert p.test.label == "doms/domain=sketch" and p.test.classes == ()


def test_every_problem_in_a_file_is_reported_at_once(prepared, tmp_path):
    _, data = prepared
    path = tmp_path / "broken.toml"
    path.write_text(
        RATIO_TOML.replace('setting = "few-shot"', 'setting = "fewshot"')
        .replace("ways = 2\n", "wayz = 2\n")
        .replace("[0.5, 0.25, 0.25]", "[0.5, 0.5, 0.5]")
    )
    with pytest.raises(pf.ProtocolFileError) as e:
        pf.read(path, data)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "unknown key 'wayz'" in msg and "did you mean 'ways'" in msg
    assert "missing key 'ways'" in msg and "bad classes.ratio" in msg and "use 'few-shot'" in msg
    lists = tmp_path / "lists.yaml"
    lists.write_text(
        LIST_YAML.replace("test: [kind2, kind3]", "test: [kind1, kind2, nope]").replace(
            "name: doms-photo-to-sketch", "name: omniglot-5w1s"
        )
    )
    with pytest.raises(pf.ProtocolFileError) as e:
        pf.read(lists, data)
    assert "'kind1' is in both classes.train and classes.test" in str(e.value)
    assert "built-in protocol" in str(e.value)


def test_protocol_add_and_a_changed_version_is_refused(prepared, tmp_path, capsys):
    _, data = prepared
    path = tmp_path / "mine.toml"
    path.write_text(RATIO_TOML)
    assert main(["protocol", "add", str(path), "--data-dir", str(data)]) == 0
    assert (data / "protocols" / "mine-2w1s.toml").read_text() == RATIO_TOML
    assert "added protocol mine-2w1s v1" in capsys.readouterr().out
    assert main(["protocol", "add", str(path), "--data-dir", str(data)]) == 0  # the same file: no-op
    assert "already added" in capsys.readouterr().out
    path.write_text(RATIO_TOML.replace("seed = 0", "seed = 1"))
    assert main(["protocol", "add", str(path), "--data-dir", str(data)]) == 2
    assert "a changed protocol gets a new version" in capsys.readouterr().err
    assert added.resolve(["mine-2w1s", "omniglot-5w1s", "omniglot-5w1z"], data) == [
        "mine-2w1s",
        "omniglot-5w1s",
        "omniglot-5w1z",
    ]
    assert PROTOCOLS.get("mine-2w1s").source[0] == str(data / "protocols" / "mine-2w1s.toml")
    added.unload("mine-2w1s")
    path.write_text(RATIO_TOML.replace("seed = 0", "seed = 1").replace("version = 1", "version = 2"))
    assert main(["protocol", "add", str(path), "--data-dir", str(data)]) == 0
    assert added.load(data / "protocols" / "mine-2w1s.toml", data).version == 2
    (data / "protocols" / "mine-2w1s.toml").unlink()
    assert main(["evaluate", "--protocol", "omniglot-5w1z", "--data-dir", str(data)]) == 2
    assert "unknown protocol 'omniglot-5w1z'. Did you mean" in capsys.readouterr().err


def test_evaluate_on_a_protocol_file_end_to_end(prepared, tmp_path, capsys):
    _, data = prepared
    path, results = tmp_path / "mine.toml", tmp_path / "results"
    path.write_text(RATIO_TOML)
    rc = main(
        [
            "evaluate",
            "--protocol",
            str(path),
            "--method",
            "protonet",
            "--train-steps",
            "1",
            "--episodes",
            "2",
            "--device",
            "cpu",
            "--data-dir",
            str(data),
            "--results",
            str(results),
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    [rec_path] = results.glob("few-shot/mine-2w1s/protonet/*.json")
    rec = json.loads(rec_path.read_text())
    assert rec["protocol"]["name"] == "mine-2w1s" and rec["protocol"]["datasets"] == ["mine"]
    assert rec["protocol"]["source"] == {"file": str(path), "sha256": pf.sha256_bytes(path.read_bytes())}
    added.unload("mine-2w1s")  # verify finds it again from the record
    assert main(["verify", str(rec_path), "--device", "cpu", "--data-dir", str(data)]) == 0
    assert "PASS" in capsys.readouterr().out
