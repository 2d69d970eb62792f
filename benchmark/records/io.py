"""Result records: validate the envelope against its versioned schema, migrate older versions, write
atomically, read back."""

from __future__ import annotations

import json
import math
import stat
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from ..core.errors import InvalidRecord
from ..core.files import atomic_write_text
from .validators import check

MEAN_TOLERANCE = 1e-6


SCHEMA_VERSION = 2


@cache
def schema(version: int = SCHEMA_VERSION) -> dict:
    return json.loads((Path(__file__).parent / "schema" / f"result-v{version}.schema.json").read_text())


def _schema_check(record: dict, version: int) -> None:
    try:
        check(record, schema(version))
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InvalidRecord(f"schema violation at {where}: {e.message}") from None


def migrate(record: dict) -> dict:
    """A record of any schema version this code knows, as the current version (a new dict).

    v1 -> v2: the setting moves to the top level (it chooses the record section), the method gains
    `recipe` (none: v1 runs used the method's plain defaults) and every run `selection` (the final model:
    v1 had no model selection). The few-shot fields of v1 are the episodic settings' section of v2."""
    version = record.get("schema_version")
    if version == SCHEMA_VERSION:
        return record
    if version != 1:
        raise InvalidRecord(
            f"schema_version {version!r} is not one this code reads (1 to {SCHEMA_VERSION}); "
            f"a newer metabench wrote it, or it is not a record"
        )
    _schema_check(record, 1)
    out = json.loads(json.dumps(record))
    out["schema_version"] = 2
    out["setting"] = record["protocol"]["setting"]
    out["method"].setdefault("recipe", None)
    for run in out["runs"]:
        run.setdefault("selection", {"rule": "final"})
    return out


def validate(record: dict) -> None:
    """Check the envelope every setting shares: the schema, and the sums a schema cannot express.
    The setting's own section is checked by the setting (benchmark.settings)."""
    if record.get("schema_version") != SCHEMA_VERSION:
        raise InvalidRecord(f"schema_version must be {SCHEMA_VERSION} (got {record.get('schema_version')!r})")
    _schema_check(record, SCHEMA_VERSION)
    if record["protocol"]["setting"] != record["setting"]:
        raise InvalidRecord(f"setting {record['setting']!r} but the protocol says {record['protocol']['setting']!r}")
    if sorted(r["seed"] for r in record["runs"]) != sorted(record["seeds"]):
        raise InvalidRecord("the seeds listed do not match the runs recorded")
    seed_means = [r["mean"] for r in record["runs"]]
    if not math.isclose(record["summary"]["mean"], sum(seed_means) / len(seed_means), abs_tol=MEAN_TOLERANCE):
        raise InvalidRecord("summary mean does not match the mean of the seed means")
    if record["summary"]["n_seeds"] != len(record["runs"]):
        raise InvalidRecord("summary n_seeds does not match the runs recorded")


def record_path(results_dir: Path, record: dict) -> Path:
    p = record["protocol"]
    return Path(results_dir) / record["setting"] / p["name"] / record["method"]["name"] / f"{record['run_id']}.json"


def write_record(results_dir: Path, record: dict) -> Path:
    validate(record)
    path = record_path(results_dir, record)
    if path.exists():
        raise FileExistsError(f"{path} already exists; run ids are unique, so this is a bug or a clash")
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False) + "\n")
    return path


# A record of 600 episodes x 10 seeds is about 150 kB; anything near this is not a record.
MAX_RECORD_BYTES = 64 << 20


def read_record(path: Path) -> dict:
    """A record file as the current schema version (older versions are migrated in memory, the file is
    left as it is), with its envelope validated. Anything that is not a plausible record (a FIFO, a
    huge file, JSON nested beyond reason) is an InvalidRecord, never a hang or a crash."""
    return parse_record(read_record_bytes(path))


def read_record_bytes(path: Path) -> bytes:
    """The bytes of what should be a record file; InvalidRecord for what cannot be one (not a regular
    file, too large, unreadable)."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as e:
        raise InvalidRecord(f"cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidRecord("not a regular file (a folder, FIFO or device); a record is a JSON file")
    if info.st_size > MAX_RECORD_BYTES:
        raise InvalidRecord(
            f"{info.st_size / 2**20:.0f} MiB is too large for a record (at most {MAX_RECORD_BYTES >> 20} MiB)"
        )
    return path.read_bytes()


def parse_record(data: bytes) -> dict:
    """A record file's bytes as the current schema version, with its envelope validated (see read_record)."""
    try:
        record = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InvalidRecord(f"not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise InvalidRecord(f"not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidRecord("JSON nested too deeply to be a record") from None
    if not isinstance(record, dict):
        raise InvalidRecord("a record must be a JSON object")
    try:
        record = migrate(record)
        validate(record)
    except RecursionError:
        raise InvalidRecord("nested too deeply to be a record") from None
    return record


def iter_records(results_dir: Path) -> Iterator[tuple[Path, dict | None, str | None]]:
    """Every *.json under results_dir as (path, record, None) or (path, None, why it was rejected)."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            yield path, read_record(path), None
        except (InvalidRecord, OSError) as e:
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
