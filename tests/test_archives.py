"""Archives are checked before they are trusted: a member or a whole archive that would unpack beyond what
an image or the dataset can be, a file that is not an image, and Omniglot archives swapped by name each
fail at prepare time with a clear error, before anything large is read."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile

import pytest

from benchmark.data import DataError, prepare
from benchmark.data.extra import tar_members
from benchmark.data.prepare import MAX_MEMBER_BYTES, open_zip


def test_a_member_larger_than_any_image_is_refused_before_reading(tmp_path):
    bomb = tmp_path / "images_background.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("images_background/A/character01/1_01.png", b"\0" * (MAX_MEMBER_BYTES + 1))
    assert bomb.stat().st_size < 1 << 20  # small on disk, large unpacked
    with pytest.raises(DataError, match="more than any image"):
        open_zip(bomb)


def test_an_archive_larger_than_its_dataset_is_refused(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(4):
            z.writestr(f"x/{i}.png", b"\0" * 1000)
    with pytest.raises(DataError, match="more than this dataset can be"):
        open_zip(path, max_total=3000)
    open_zip(path, max_total=4000).close()


def test_a_tar_member_larger_than_any_image_is_refused(tmp_path):
    path = tmp_path / "CUB_200_2011.tgz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("CUB_200_2011/images/001.Bird/a.jpg")
        info.size = MAX_MEMBER_BYTES + 1
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    path.write_bytes(gzip.compress(buf.getvalue(), compresslevel=1))
    with pytest.raises(DataError, match="more than any image"):
        list(tar_members(path, lambda p: True))


def test_a_file_that_is_not_an_image_is_named_at_prepare_time(tmp_path, omniglot_zips):
    info = omniglot_zips(tmp_path / "src")
    with zipfile.ZipFile(info["background"], "a") as z:
        z.writestr("images_background/Alpha/character01/9999_09.png", b"this is not a png")
    with pytest.raises(DataError, match=r"9999_09\.png is not an image"):
        prepare("omniglot", source=tmp_path / "src", data_dir=tmp_path / "data", log=lambda _m: None)
    assert not (tmp_path / "data" / "omniglot").exists()


def test_swapped_omniglot_archives_are_refused(tmp_path, omniglot_zips):
    omniglot_zips(tmp_path / "src", alphabets={"background": {"Angelic": 1}, "evaluation": {"Latin": 1}})
    with pytest.raises(DataError, match="swapped"):
        prepare("omniglot", source=tmp_path / "src", data_dir=tmp_path / "data", log=lambda _m: None)
