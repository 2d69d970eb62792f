"""Result records: build, validate against the one schema, write atomically, read back."""
from __future__ import annotations

import json
import math
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema

MEAN_TOLERANCE = 1e-6


class InvalidRecord(ValueError):
    pass


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads((Path(__file__).parent / "schema" / "result.schema.json").read_text())


def validate(record: dict) -> None:
    """Schema check plus the consistency checks a schema cannot express."""
    try:
        jsonschema.validate(record, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InvalidRecord(f"schema violation at {where}: {e.message}") from None
    for run in record["runs"]:
        accs = run["episode_accuracies"]
        if run["n"] != len(accs):
            raise InvalidRecord(f"seed {run['seed']}: n={run['n']} but {len(accs)} episode accuracies")
        if not math.isclose(run["mean"], sum(accs) / len(accs), abs_tol=MEAN_TOLERANCE):
            raise InvalidRecord(f"seed {run['seed']}: recorded mean {run['mean']:.6f} does not match "
                                f"its episode accuracies ({sum(accs) / len(accs):.6f})")
    if sorted(r["seed"] for r in record["runs"]) != sorted(record["seeds"]):
        raise InvalidRecord("the seeds listed do not match the runs recorded")
    seed_means = [r["mean"] for r in record["runs"]]
    if not math.isclose(record["summary"]["mean"], sum(seed_means) / len(seed_means), abs_tol=MEAN_TOLERANCE):
        raise InvalidRecord("summary mean does not match the mean of the seed means")
    if record["summary"]["n_seeds"] != len(record["runs"]):
        raise InvalidRecord("summary n_seeds does not match the runs recorded")


def record_path(results_dir: Path, record: dict) -> Path:
    p = record["protocol"]
    return Path(results_dir) / p["setting"] / p["name"] / record["method"]["name"] / f"{record['run_id']}.json"


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(results_dir: Path, record: dict) -> Path:
    validate(record)
    path = record_path(results_dir, record)
    if path.exists():
        raise FileExistsError(f"{path} already exists; run ids are unique, so this is a bug or a clash")
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False) + "\n")
    return path


def read_record(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise InvalidRecord(f"not valid JSON: {e}") from None
    if not isinstance(record, dict):
        raise InvalidRecord("a record must be a JSON object")
    validate(record)
    return record


def iter_records(results_dir: Path) -> Iterator[tuple[Path, dict | None, str | None]]:
    """Every *.json under results_dir as (path, record, None) or (path, None, why it was rejected)."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            yield path, read_record(path), None
        except (InvalidRecord, OSError, UnicodeDecodeError) as e:
            yield path, None, str(e)


def to_jsonable(obj: Any) -> Any:
    """Hyper-parameters may hold tuples, paths or numpy scalars; records hold plain JSON."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
