"""`bench data prepare` and `load_prepared`: synthetic archives in the official layouts for the
failure modes, the real archives (integration) for the row, class and split counts."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmark.core import paths
from benchmark.core.registry import UnknownName
from benchmark.data import DATASETS, DataError, load_prepared, prepare
from benchmark.data.prepare import MANIFEST, open_zip


def quiet(_msg: str) -> None:
    pass


@pytest.fixture
def no_source_env(monkeypatch):
    for var in (paths.SOURCE_ENV, paths.source_env_var("omniglot"), paths.DATA_DIR_ENV):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def omni_src(tmp_path, omniglot_zips, no_source_env):
    return omniglot_zips(tmp_path / "src" / "omniglot")


# ---- prepare on synthetic archives ---------------------------------------------------------------


def test_prepare_synthetic_omniglot(omni_src, tmp_path):
    out = tmp_path / "data"
    prep = prepare("omniglot", source=omni_src["root"], data_dir=out, log=quiet)
    assert prep.path == out / "omniglot" and (prep.path / MANIFEST).is_file()
    ds = prep.dataset()
    for col in ("image", "label", "alphabet", "character", "split"):
        assert col in ds.column_names
    assert len(ds) == omni_src["rows"] == prep.manifest["rows"]
    assert prep.manifest["classes"] == len(omni_src["labels"])
    rows = ds.remove_columns("image").to_pandas()
    assert set(rows["label"]) == set(omni_src["labels"])
    for label, alphabet, character, split in rows[["label", "alphabet", "character", "split"]].itertuples(index=False):
        assert omni_src["labels"][label] == (alphabet, character, split)
        assert label == f"{alphabet}/{character}"
    assert set(rows["split"]) == {"background", "evaluation"}
    assert ds[0]["image"].size == (12, 12)  # the original bytes, decodable
    sums = prep.manifest["source_sha256"]
    assert sums["images_background.zip"] == hashlib.sha256(omni_src["background"].read_bytes()).hexdigest()
    # a source root holding one folder per dataset (as ../shared/data) works too
    again = prepare("omniglot", source=omni_src["root"].parent, data_dir=tmp_path / "data2", log=quiet)
    assert again.fingerprint == prep.fingerprint


def test_second_prepare_is_a_no_op(omni_src, tmp_path, capsys):
    out = tmp_path / "data"
    first = prepare("omniglot", source=omni_src["root"], data_dir=out, log=quiet)
    manifest_bytes = (out / "omniglot" / MANIFEST).read_bytes()
    arrow_mtimes = {p: p.stat().st_mtime_ns for p in (out / "omniglot").rglob("*") if p.is_file()}
    second = prepare("omniglot", source=omni_src["root"], data_dir=out)  # default log: print
    assert "nothing to do" in capsys.readouterr().out
    assert second.manifest == first.manifest
    assert (out / "omniglot" / MANIFEST).read_bytes() == manifest_bytes
    assert {p: p.stat().st_mtime_ns for p in (out / "omniglot").rglob("*") if p.is_file()} == arrow_mtimes
    # --force rebuilds, from the same bytes to the same fingerprint
    forced = prepare("omniglot", source=omni_src["root"], data_dir=out, force=True, log=quiet)
    assert forced.fingerprint == first.fingerprint
    assert not list(out.glob(".omniglot.tmp-*"))


def test_changed_source_is_prepared_again(omni_src, tmp_path, omniglot_zips):
    out = tmp_path / "data"
    first = prepare("omniglot", source=omni_src["root"], data_dir=out, log=quiet)
    omniglot_zips(omni_src["root"], alphabets={"background": {"Alpha": 3}, "evaluation": {"Gamma": 1}})
    msgs = []
    second = prepare("omniglot", source=omni_src["root"], data_dir=out, log=msgs.append)
    assert not any("nothing to do" in m for m in msgs)
    assert second.fingerprint != first.fingerprint and second.manifest["classes"] == 4
    assert load_prepared("omniglot", out).fingerprint == second.fingerprint


def test_truncated_zip_is_a_data_error(omni_src, tmp_path):
    z = omni_src["background"]
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(DataError, match="not a readable zip") as ei:
        prepare("omniglot", source=omni_src["root"], data_dir=tmp_path / "data", log=quiet)
    assert "images_background.zip" in str(ei.value) and "corrupt" in str(ei.value)
    assert not (tmp_path / "data" / "omniglot").exists()


def _member_data_offset(path: Path, name: str) -> int:
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    raw = path.read_bytes()
    n_name, n_extra = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + n_name + n_extra


def test_stored_member_failing_its_crc_is_a_data_error(tmp_path, omniglot_zips, no_source_env):
    src = omniglot_zips(tmp_path / "src", compression=zipfile.ZIP_STORED)
    z = src["evaluation"]
    with zipfile.ZipFile(z) as zf:
        member = [n for n in zf.namelist() if n.endswith(".png")][0]
    raw = bytearray(z.read_bytes())
    raw[_member_data_offset(z, member) + 20] ^= 0xFF  # one flipped byte inside the image data
    z.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt") as ei:
        prepare("omniglot", source=src["root"], data_dir=tmp_path / "data", log=quiet)
    assert member in str(ei.value)


def test_corrupt_deflate_stream_is_a_data_error(tmp_path, omniglot_zips, no_source_env):
    """Bit rot inside a compressed member makes zlib fail before any CRC is computed; the user must
    still get the DataError that says 'corrupt, download it again', not a raw zlib.error."""
    src = omniglot_zips(tmp_path / "src", compression=zipfile.ZIP_DEFLATED)
    z = src["background"]
    with zipfile.ZipFile(z) as zf:
        member = [n for n in zf.namelist() if n.endswith(".png")][0]
    raw = bytearray(z.read_bytes())
    raw[_member_data_offset(z, member)] = 0xFF  # first deflate block header: BTYPE=11, which is invalid
    z.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt"):
        open_zip(z)
    with pytest.raises(DataError, match="corrupt"):
        prepare("omniglot", source=src["root"], data_dir=tmp_path / "data", log=quiet)


@pytest.mark.parametrize("layout", ["beside", "root"])
def test_sha256sums_mismatch_is_a_data_error(omni_src, tmp_path, layout):
    bg = omni_src["background"]
    good = hashlib.sha256(bg.read_bytes()).hexdigest()
    wrong = hashlib.sha256(b"something else").hexdigest()
    if layout == "beside":  # SHA256SUMS next to the archives
        (omni_src["root"] / "SHA256SUMS").write_text(f"{wrong}  images_background.zip\n")
        source = omni_src["root"]
    else:  # one SHA256SUMS at the root of a multi-dataset folder, as ../shared/data
        (omni_src["root"].parent / "SHA256SUMS").write_text(f"{wrong}  omniglot/images_background.zip\n")
        source = omni_src["root"].parent
    with pytest.raises(DataError, match="SHA256SUMS") as ei:
        prepare("omniglot", source=source, data_dir=tmp_path / "data", log=quiet)
    assert "images_background.zip" in str(ei.value) and "corrupt" in str(ei.value)
    assert not (tmp_path / "data" / "omniglot").exists()
    # with the right checksum it prepares
    for f in (omni_src["root"] / "SHA256SUMS", omni_src["root"].parent / "SHA256SUMS"):
        if f.exists():
            name = "images_background.zip" if f.parent == omni_src["root"] else "omniglot/images_background.zip"
            f.write_text(f"{good}  {name}\n")
    prepare("omniglot", source=source, data_dir=tmp_path / "data", log=quiet)


def test_interrupted_prepare_leaves_nothing_trusted(omni_src, tmp_path, monkeypatch):
    import datasets

    out = tmp_path / "data"
    real_save = datasets.Dataset.save_to_disk

    def save_then_crash(self, *args, **kwargs):
        real_save(self, *args, **kwargs)  # the Arrow files are written ...
        raise KeyboardInterrupt  # ... and then the user presses Ctrl-C

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        prepare("omniglot", source=omni_src["root"], data_dir=out, log=quiet)
    assert not (out / "omniglot").exists()
    assert not list(out.glob(".omniglot.tmp-*"))
    with pytest.raises(DataError, match="bench data prepare omniglot"):
        load_prepared("omniglot", out)
    monkeypatch.undo()

    # a hard kill leaves a hidden temporary folder behind: nothing trusts it and the next prepare removes it
    stale = out / ".omniglot.tmp-killed"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "half.arrow").write_bytes(b"\0" * 10)
    prep = prepare("omniglot", source=omni_src["root"], data_dir=out, log=quiet)
    assert not stale.exists()
    assert load_prepared("omniglot", out).fingerprint == prep.fingerprint
    assert len(prep.dataset()) == omni_src["rows"]


def test_failed_rebuild_keeps_the_previous_copy(omni_src, tmp_path, monkeypatch):
    out = tmp_path / "data"
    first = prepare("omniglot", source=omni_src["root"], data_dir=out, log=quiet)
    spec = DATASETS.get("omniglot")

    def broken_build(files):
        raise RuntimeError("builder crashed halfway")

    monkeypatch.setitem(DATASETS._items, "omniglot", dataclasses.replace(spec, build=broken_build))
    with pytest.raises(RuntimeError, match="halfway"):
        prepare("omniglot", source=omni_src["root"], data_dir=out, force=True, log=quiet)
    assert load_prepared("omniglot", out).manifest == first.manifest
    assert len(load_prepared("omniglot", out).dataset()) == omni_src["rows"]
    assert sorted(p.name for p in out.iterdir()) == ["omniglot"]


def test_missing_source_file_is_named(omni_src, tmp_path):
    omni_src["evaluation"].unlink()
    with pytest.raises(DataError) as ei:
        prepare("omniglot", source=omni_src["root"], data_dir=tmp_path / "data", log=quiet)
    msg = str(ei.value)
    assert "images_evaluation.zip" in msg and "not found" in msg
    with pytest.raises(DataError, match="does not exist"):
        prepare("omniglot", source=tmp_path / "nowhere", data_dir=tmp_path / "data", log=quiet)


def test_load_prepared_of_an_unprepared_name(tmp_path, no_source_env):
    with pytest.raises(DataError) as ei:
        load_prepared("omniglot", tmp_path / "empty")
    assert "bench data prepare omniglot" in str(ei.value)
    assert "BENCH_SOURCE" in str(ei.value)


def test_unknown_dataset_says_did_you_mean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="Did you mean 'omniglot'"):
        load_prepared("omniglott", tmp_path)
    with pytest.raises(UnknownName, match="Did you mean 'caltech101'"):
        prepare("caltech-101", source=tmp_path, data_dir=tmp_path / "data", log=quiet)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_without_internet_points_at_source(tmp_path, monkeypatch, no_source_env):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    url = f"http://127.0.0.1:{_unused_port()}/omniglot"
    with pytest.raises(DataError) as ei:
        prepare("omniglot", source=url, data_dir=tmp_path / "data", log=quiet)
    msg = str(ei.value)
    assert "could not download" in msg and "--source" in msg and "BENCH_SOURCE" in msg
    assert not list((tmp_path / "data").rglob("*.part"))
    # through the environment variable, the same
    monkeypatch.setenv(paths.SOURCE_ENV, url)
    with pytest.raises(DataError, match="--source"):
        prepare("omniglot", data_dir=tmp_path / "data", log=quiet)


def test_dataset_without_public_download_asks_for_source(tmp_path, no_source_env, monkeypatch):
    monkeypatch.delenv(paths.source_env_var("pacs"), raising=False)
    with pytest.raises(DataError, match="no public download.*--source"):
        prepare("pacs", data_dir=tmp_path / "data", log=quiet)


def _png_bytes(value: int) -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def test_load_prepared_of_a_foreign_save_to_disk_folder(tmp_path):
    import datasets

    folder = tmp_path / "my-set"
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    datasets.Dataset.from_dict(
        {"image": [_png_bytes(10 * i) for i in range(12)], "label": [f"c{i % 3}" for i in range(12)]}, features=feats
    ).save_to_disk(str(folder))
    prep = load_prepared(str(folder), tmp_path / "data")
    assert prep.name == "my-set" and prep.manifest["rows"] == 12 and prep.fingerprint
    assert prep.manifest["foreign"] == str(folder)
    ds = prep.dataset()
    assert len(ds) == 12 and sorted(set(ds["label"])) == ["c0", "c1", "c2"]

    from benchmark.protocols import SplitSpec
    from benchmark.store import build_view, load_store

    store = load_store(str(folder), 8, 1, str(tmp_path / "data"))
    view = build_view(store, SplitSpec(str(folder)))
    assert view.classes == ("c0", "c1", "c2") and view.counts.tolist() == [4, 4, 4]

    # a folder without a label column is refused, saying which columns it has
    bad = tmp_path / "no-label"
    datasets.Dataset.from_dict(
        {"image": [_png_bytes(0)], "y": [1]},
        features=datasets.Features({"image": datasets.Image(), "y": datasets.Value("int64")}),
    ).save_to_disk(str(bad))
    with pytest.raises(DataError, match="no 'label' column"):
        load_prepared(str(bad), tmp_path / "data")


def test_foreign_dataset_with_integer_labels_can_be_used(tmp_path):
    """Most saved/hub image datasets carry ClassLabel (integer) labels; load_prepared accepts them, so
    the tensor store and views must be able to use them too."""
    import datasets

    from benchmark.protocols import SplitSpec
    from benchmark.store import build_view, load_store

    folder = tmp_path / "int-labels"
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    datasets.Dataset.from_dict(
        {"image": [_png_bytes(10 * i) for i in range(12)], "label": [i % 3 for i in range(12)]}, features=feats
    ).save_to_disk(str(folder))
    assert load_prepared(str(folder), tmp_path / "data").manifest["rows"] == 12
    store = load_store(str(folder), 8, 1, str(tmp_path / "data"))
    view = build_view(store, SplitSpec(str(folder)))
    assert view.n_classes == 3 and view.counts.tolist() == [4, 4, 4]


# ---- the real archives ---------------------------------------------------------------------------


@pytest.mark.integration
def test_prepared_omniglot(data_dir):
    prep = load_prepared("omniglot", data_dir)
    assert prep.manifest["rows"] == 32_460 and prep.manifest["classes"] == 1_623
    ds = prep.dataset()
    assert len(ds) == 32_460
    meta = ds.remove_columns("image").to_pandas()
    assert meta["label"].nunique() == 1_623
    assert meta.groupby("split")["label"].nunique().to_dict() == {"background": 964, "evaluation": 659}
    assert meta["alphabet"].nunique() == 50
    assert (meta.groupby("label").size() == 20).all()  # 20 drawers per character


@pytest.mark.integration
def test_prepared_pacs(data_dir):
    prep = load_prepared("pacs", data_dir)
    assert prep.manifest["rows"] == 9_991 and prep.manifest["classes"] == 7
    meta = prep.dataset().remove_columns("image").to_pandas()
    assert sorted(meta["label"].unique()) == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    assert meta["domain"].value_counts().to_dict() == {
        "sketch": 3929,
        "cartoon": 2344,
        "art_painting": 2048,
        "photo": 1670,
    }


@pytest.mark.integration
def test_prepared_caltech101(data_dir):
    prep = load_prepared("caltech101", data_dir)
    assert prep.manifest["rows"] == 8_677 and prep.manifest["classes"] == 101
    labels = set(prep.dataset()["label"])
    assert len(labels) == 101 and "BACKGROUND_Google" not in labels


@pytest.mark.integration
def test_prepare_of_the_real_data_is_a_no_op_the_second_time(data_dir, shared_data):
    msgs = []
    before = load_prepared("pacs", data_dir).manifest
    again = prepare("pacs", source=shared_data, data_dir=data_dir, log=msgs.append)
    assert any("nothing to do" in m for m in msgs) and again.manifest == before


@pytest.mark.integration
@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_omniglot_split_matches_the_vinyals_files(shared_data, part):
    from benchmark.protocols import ROT4, class_split

    lines = (shared_data / "splits" / "omniglot" / "vinyals" / f"{part}.txt").read_text().split()
    assert len(lines) == len(set(lines))
    by_class: dict[str, set[str]] = {}
    for line in lines:
        alphabet, character, rot = line.split("/")
        assert character.startswith("character") and rot in {"rot000", "rot090", "rot180", "rot270"}
        by_class.setdefault(f"{alphabet}/{character}", set()).add(rot)
    assert all(len(r) == 4 for r in by_class.values())  # all four rotations of every character
    stored = class_split("omniglot-vinyals-v1")[part]
    assert len(stored) == len(set(stored))
    assert set(stored) == set(by_class)
    assert {f"{c}/rot{r:03d}" for c in stored for r in ROT4} == set(lines)


@pytest.mark.integration
def test_omniglot_split_parts_are_disjoint_and_cover_the_data(data_dir):
    from benchmark.protocols import class_split

    parts = class_split("omniglot-vinyals-v1")
    sets = {k: set(v) for k, v in parts.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    labels = set(load_prepared("omniglot", data_dir).dataset()["label"])
    assert sets["train"] | sets["val"] | sets["test"] == labels
    assert (len(sets["train"]) * 4, len(sets["test"]) * 4) == (4_112, 1_692)


@pytest.mark.integration
def test_caltech101_split_is_what_the_generator_gives(data_dir):
    import benchmark.protocols.splits as splits

    classes = sorted(set(load_prepared("caltech101", data_dir).dataset()["label"]))
    stored = json.loads((Path(splits.__file__).parent / splits.SPLIT_FILES["caltech101-v1"]).read_text())
    assert splits.make_caltech101(classes, seed=0) == stored
    parts = splits.class_split("caltech101-v1")
    assert {k: len(v) for k, v in parts.items()} == {"train": 60, "val": 15, "test": 26}
    assert sorted(c for v in parts.values() for c in v) == classes
    where = {c: part for part, cs in parts.items() for c in cs}
    for c in splits.CALTECH_PACS_OVERLAP:
        assert where[c] == "test", c
    for group in splits.CALTECH_GROUPS:
        assert len({where[c] for c in group}) == 1, group
    assert splits.make_caltech101(classes, seed=1) != stored  # the seed matters
