"""Result records: the schema, reading, validating and atomic writing, and the interval they report."""

from ..core.errors import InvalidRecord
from .intervals import Interval, format_ci, mean_ci
from .io import iter_records, read_record, record_path, schema, to_jsonable, validate, write_record
from .model import Checkpoint, MethodInfo, ProtocolInfo, Record, SeedRun, Summary

__all__ = [
    "Checkpoint",
    "MethodInfo",
    "ProtocolInfo",
    "Record",
    "SeedRun",
    "Summary",
    "InvalidRecord",
    "Interval",
    "format_ci",
    "mean_ci",
    "iter_records",
    "read_record",
    "record_path",
    "schema",
    "to_jsonable",
    "validate",
    "write_record",
]
