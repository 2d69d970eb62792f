"""The tensor cache cannot run code, and edited data cannot pass for the prepared data: a cache that
fails its own checksum is rebuilt, prepared files that differ from their manifest are refused, and the
fingerprint a record keeps covers the exact pixels and labels scored."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data import DataError, prepare
from benchmark.store import tensors
from benchmark.store.tensors import load_store


class Marker:
    """Unpickling this writes a file: the proof that loading ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture
def prepared(tmp_path, omniglot_zips):
    omniglot_zips(tmp_path / "src")
    prepare("omniglot", source=tmp_path / "src", data_dir=tmp_path / "data", log=lambda _m: None)
    tensors._load_store.cache_clear()
    yield tmp_path / "data"
    tensors._load_store.cache_clear()


def fresh(data_dir):
    tensors._load_store.cache_clear()  # as a new process would
    return load_store("omniglot", 28, 1, data_dir)


def cache_file(data_dir):
    (path,) = (data_dir / "omniglot" / "cache").glob("store-v*.npz")
    return path


def test_the_cache_is_arrays_only_and_a_crafted_one_runs_nothing(prepared, tmp_path):
    first = fresh(prepared)
    path = cache_file(prepared)
    with np.load(path, allow_pickle=False) as z:  # readable without pickles at all
        assert z["images"].dtype == np.uint8
    marker = tmp_path / "ran"
    with open(path, "wb") as f:
        np.savez(
            f,
            images=np.array([Marker(marker)], dtype=object),
            mean=np.zeros(1),
            std=np.ones(1),
            prepared=np.asarray("x"),
            content=np.asarray("x"),
            **{"col:label": np.asarray(["a"])},
        )
    with np.load(path, allow_pickle=True) as z:  # the crafted file is dangerous to a loader that allows pickles
        z["images"]
    assert marker.exists()
    marker.unlink()
    again = fresh(prepared)
    assert not marker.exists()
    assert again.fingerprint == first.fingerprint and np.array_equal(again.images.numpy(), first.images.numpy())


def test_an_edited_cache_is_rebuilt_and_cannot_change_the_fingerprint(prepared, capsys):
    first = fresh(prepared)
    path = cache_file(prepared)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"] = 255 - arrays["images"]  # every pixel flipped, the stored checksum kept
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    again = fresh(prepared)
    assert "does not match its own checksum" in capsys.readouterr().out
    assert np.array_equal(again.images.numpy(), first.images.numpy()) and again.fingerprint == first.fingerprint
    flipped = tensors.content_fingerprint("p", arrays["images"], arrays["col:label"])
    assert flipped != tensors.content_fingerprint("p", first.images.numpy(), arrays["col:label"])


def test_prepared_files_edited_after_prepare_are_refused(prepared):
    fresh(prepared)
    cache_file(prepared).unlink()  # no cache: the run must decode the prepared files
    arrow = next((prepared / "omniglot" / "data").glob("*.arrow"))
    raw = bytearray(arrow.read_bytes())
    raw[-100] ^= 0xFF
    arrow.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="modified after it was prepared"):
        fresh(prepared)
