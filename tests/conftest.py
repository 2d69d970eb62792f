"""Shared fixtures: the real datasets (prepared once per session into a tmp dir), a synthetic
`EpisodeView` built straight from tensors, and a tiny Omniglot-layout archive builder.

Nothing here is autouse and nothing is registered globally: every helper is a fixture. The one hook
beyond options orders the collection (the long real-data tests first) and changes no test.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # each xdist worker owns one core: torch's default of a thread per core would oversubscribe them
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread setting, which torch reads once, at import)

SHARED_DATA_NAMES = ("omniglot", "pacs", "caltech101")


def pytest_addoption(parser):
    parser.addoption(
        "--require-data",
        action="store_true",
        help="fail, rather than skip, the tests that need the real datasets when they are missing "
        "(the default under CI=true)",
    )


def pytest_collection_modifyitems(config, items):
    # pytest-xdist hands tests out in collection order: starting the long real-data tests first leaves the
    # many short ones to even out the two workers' ends (longest-first scheduling); the sort is stable, so
    # each group keeps its file order.
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)


def _shared_data_candidates() -> list[Path]:
    # BENCH_SHARED_DATA names the folder outright; else CI checks the project out beside ../shared/data,
    # and BENCH_SOURCE is the fallback.
    if os.environ.get("BENCH_SHARED_DATA"):
        return [Path(os.environ["BENCH_SHARED_DATA"]).expanduser()]
    out = [Path(__file__).resolve().parents[1].parent / "shared" / "data"]
    if os.environ.get("BENCH_SOURCE"):
        out.append(Path(os.environ["BENCH_SOURCE"]).expanduser())
    return out


def _has_real_data(root: Path) -> bool:
    return (
        (root / "omniglot" / "images_background.zip").is_file()
        and (root / "pacs" / "PACS.zip").is_file()
        and (root / "caltech101" / "101_ObjectCategories.zip").is_file()
    )


@pytest.fixture(scope="session")
def shared_data(request) -> Path:
    """The folder holding the real archives (omniglot/, pacs/, caltech101/, splits/)."""
    for cand in _shared_data_candidates():
        if _has_real_data(cand):
            return cand
    where = ", ".join(str(c) for c in _shared_data_candidates())
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") or request.config.getoption("--require-data"):
        pytest.fail(
            f"the real datasets are missing (looked in {where}) and this run requires them (CI=true or "
            f"--require-data): the integration tests must not be skipped in CI",
            pytrace=False,
        )
    pytest.skip(f"real datasets not found (looked in {where}); set BENCH_SOURCE to run integration tests")


@pytest.fixture(scope="session")
def data_dir(shared_data: Path, tmp_path_factory) -> Path:
    """A session tmp data dir with omniglot, pacs and caltech101 prepared once from the real archives."""
    from benchmark.data import prepare

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.mktemp("prepared")
        for name in SHARED_DATA_NAMES:
            prepare(name, source=shared_data, data_dir=root, log=lambda _msg: None)
        return root
    # under pytest-xdist the workers share one prepared folder in the session's base temp (theirs are its
    # subfolders): the first prepares it and decodes the image caches the tests read, the others wait
    from filelock import FileLock

    from benchmark.store import load_store

    root = tmp_path_factory.getbasetemp().parent / "prepared"
    with FileLock(str(root) + ".lock"):
        if not (root / ".complete").is_file():
            for name in SHARED_DATA_NAMES:
                prepare(name, source=shared_data, data_dir=root, log=lambda _msg: None)
            for name, size, channels in (("omniglot", 28, 1), ("caltech101", 84, 3), ("pacs", 84, 3)):
                load_store(name, size, channels, str(root))
            (root / ".complete").touch()
    return root


# ---- synthetic episode views ---------------------------------------------------------------------


def _synthetic_view(
    counts,
    label: str = "synthetic",
    fingerprint: str = "synthetic-v1",
    size: int = 2,
    class_names=None,
    device: str = "cpu",
):
    """A class-contiguous view whose every image encodes its own row index.

    Channel 0 holds row % 256 and channel 1 holds row // 256 (constant over pixels); mean 0 and std 1,
    so `view.normalise(x) * 255` gives those bytes back and `decode_rows` recovers the row exactly.
    """
    from benchmark.store import EpisodeView

    counts = [int(c) for c in counts]
    total = sum(counts)
    assert total < 256 * 256
    rows = torch.arange(total)
    images = torch.empty(total, 2, size, size, dtype=torch.uint8)
    images[:, 0] = (rows % 256).to(torch.uint8).view(-1, 1, 1)
    images[:, 1] = (rows // 256).to(torch.uint8).view(-1, 1, 1)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))
    names = tuple(class_names) if class_names is not None else tuple(f"class{i:03d}" for i in range(len(counts)))
    view = EpisodeView(
        label,
        images,
        offsets,
        torch.tensor(counts, dtype=torch.int64),
        names,
        torch.zeros(2, 1, 1),
        torch.ones(2, 1, 1),
        fingerprint,
    )
    return view.to(device)


def _decode_rows(x: torch.Tensor) -> torch.Tensor:
    """Normalised synthetic images [..., 2, H, W] -> the row index each was drawn from [...]."""
    b = torch.round(x[..., :, 0, 0] * 255).long()
    return b[..., 0] + 256 * b[..., 1]


@pytest.fixture
def make_view():
    """make_view(counts, label=..., fingerprint=..., size=..., class_names=...) -> EpisodeView."""
    return _synthetic_view


@pytest.fixture
def decode_rows():
    """decode_rows(normalised images from a make_view view) -> row indices."""
    return _decode_rows


# ---- synthetic Omniglot archives -----------------------------------------------------------------


def _png(seed: int, size: int = 12) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray((rng.random((size, size)) > 0.5).astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def _omniglot_zips(root: Path, alphabets=None, drawers: int = 3, compression: int = zipfile.ZIP_DEFLATED) -> dict:
    """Write images_background.zip and images_evaluation.zip in the official layout under `root`.

    `alphabets` maps archive part ("background"/"evaluation") to {alphabet: number of characters}.
    Returns {"root", "background", "evaluation", "labels": {label: (alphabet, character, split)}, "rows"}.
    """
    alphabets = alphabets or {"background": {"Alpha": 2, "Beta": 1}, "evaluation": {"Gamma": 2}}
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = {"root": root, "labels": {}, "rows": 0}
    seed = 0
    for part, alphas in alphabets.items():
        path = root / f"images_{part}.zip"
        with zipfile.ZipFile(path, "w", compression) as z:
            z.writestr(f"images_{part}/", b"")  # a folder entry, as in the official zips
            for alpha, n_chars in alphas.items():
                for c in range(1, n_chars + 1):
                    char = f"character{c:02d}"
                    out["labels"][f"{alpha}/{char}"] = (alpha, char, part)
                    for d in range(1, drawers + 1):
                        seed += 1
                        z.writestr(f"images_{part}/{alpha}/{char}/{1000 + seed:04d}_{d:02d}.png", _png(seed))
                        out["rows"] += 1
        out[part] = path
    return out


@pytest.fixture
def omniglot_zips():
    """omniglot_zips(root, alphabets=None, drawers=3, compression=ZIP_DEFLATED) -> info dict."""
    return _omniglot_zips
