"""Compiled JSON Schema validators for records.

`jsonschema.validate` checks the schema itself on every call and then walks every item of every array;
a record's per-unit scores (600 episode accuracies per seed, thousands of per-image values) made that
about 5 ms a record, and even compiled, jsonschema's walk costs about a millisecond a record. So:

1. Each schema is compiled once by fastjsonschema (generated Python code, about 20 times faster) when it
   uses only keywords that draft 7, which fastjsonschema implements, and draft 2020-12 read alike; a record
   it passes is valid. fastjsonschema is stricter in places (formats, patterns before a final newline,
   integral floats), never looser on those keywords, so anything it rejects goes to step 2.
2. jsonschema, compiled once per schema, decides and words the error exactly as `jsonschema.validate`
   would; there an array of plain JSON numbers under an `items` schema that only bounds numbers is checked
   in one numpy pass, and only an array failing that is walked item by item for the message.
"""

from __future__ import annotations

from typing import Any

import fastjsonschema
import jsonschema
import numpy as np

# Below this length the item-by-item walk is already cheap and the numpy set-up would not pay.
_FAST_MIN_ITEMS = 16
_NUMBER_KEYWORDS = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "title", "description"}
_EXACT_INT = 2**53  # ints beyond this are not exact as float64, so they take the slow path

_compiled: dict[int, tuple[dict, Any]] = {}


def _bounds_only(items: Any) -> bool:
    return (
        isinstance(items, dict)
        and items.get("type") in ("number", ["number"])
        and set(items) <= _NUMBER_KEYWORDS
        and all(isinstance(items.get(k, 0), (int, float)) for k in _NUMBER_KEYWORDS - {"type", "title", "description"})
    )


def _numbers_pass(instance: list, items: dict) -> bool:
    """True when every item is a JSON number (not a bool) within the bounds; False means: ask jsonschema."""
    kinds = set(map(type, instance))
    if not kinds <= {int, float}:
        return False
    try:
        x = np.asarray(instance, dtype=np.float64)
    except OverflowError:
        return False
    if int in kinds and np.abs(x).max() >= _EXACT_INT:
        return False
    # NaN compares false both here and in jsonschema's bound checks, so it passes both alike.
    checks = (
        ("minimum", np.less),
        ("maximum", np.greater),
        ("exclusiveMinimum", np.less_equal),
        ("exclusiveMaximum", np.greater_equal),
    )
    return not any(k in items and bool(op(x, items[k]).any()) for k, op in checks)


def _fast_items(slow):
    def items(validator, items, instance, schema):
        if (
            isinstance(instance, list)
            and len(instance) >= _FAST_MIN_ITEMS
            and "prefixItems" not in schema
            and _bounds_only(items)
            and _numbers_pass(instance, items)
        ):
            return
        yield from slow(validator, items, instance, schema)

    return items


# Keywords draft 7 and draft 2020-12 define alike (for `items`: a schema, not a list), or that annotate only.
_SAME_IN_BOTH = {
    "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "format", "enum",
    "const", "title", "description", "$schema", "$id", "default", "examples",
}  # fmt: skip
_SUBSCHEMA_MAPS = {"properties"}
_fast: dict[int, tuple[dict, Any]] = {}


def _draft_neutral(schema: Any) -> bool:
    """Whether fastjsonschema reads the schema as jsonschema does."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict) or not set(schema) <= _SAME_IN_BOTH:
        return False
    for key, value in schema.items():
        if key in ("enum", "const"):
            values = value if key == "enum" else [value]
            if not isinstance(values, list) or not all(_unambiguous(v) for v in values):
                return False
        elif key in _SUBSCHEMA_MAPS:
            if not isinstance(value, dict) or not all(_draft_neutral(v) for v in value.values()):
                return False
        elif key in ("items", "additionalProperties") and not _draft_neutral(value):
            return False
    return True


def _unambiguous(value: Any) -> bool:
    """A value fastjsonschema compares as jsonschema does: Python has True == 1 and False == 0."""
    if isinstance(value, bool):
        return False
    return value is None or isinstance(value, str) or (isinstance(value, (int, float)) and value not in (0, 1))


Path = tuple[str, ...]  # property names from the root; "*" for every item of an array


def _split_numbers(schema: Any, path: Path = ()) -> tuple[Any, list[tuple[Path, dict]]]:
    """The schema without its `items` that only bound numbers, and where those arrays are: fastjsonschema
    checks such an array item by item, numpy in one pass."""
    if not isinstance(schema, dict):
        return schema, []
    out, found = dict(schema), []
    if _bounds_only(schema.get("items")):
        found.append((path, out.pop("items")))
    elif isinstance(schema.get("items"), dict):
        out["items"], inner = _split_numbers(schema["items"], (*path, "*"))
        found += inner
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {}
        for key, sub in schema["properties"].items():
            out["properties"][key], inner = _split_numbers(sub, (*path, key))
            found += inner
    return out, found


def _arrays_at(instance: Any, path: Path) -> list:
    if not path:
        return [instance]
    head, rest = path[0], path[1:]
    if head == "*":
        return [a for item in instance for a in _arrays_at(item, rest)] if isinstance(instance, list) else []
    return _arrays_at(instance[head], rest) if isinstance(instance, dict) and head in instance else []


def _fast_validator(schema: dict):
    """fastjsonschema's validator of the schema less its number arrays, and where those are; None when the
    schema uses keywords fastjsonschema may read otherwise."""
    hit = _fast.get(id(schema))
    if hit is None or hit[0] is not schema:
        fast = None
        if _draft_neutral(schema):
            plain, numbers = _split_numbers({k: v for k, v in schema.items() if k != "$schema"})
            fast = (fastjsonschema.compile(plain), numbers)
        hit = (schema, fast)
        _fast[id(schema)] = hit
    return hit[1]


def _fast_pass(fast, instance: Any) -> bool:
    validate, numbers = fast
    try:
        validate(instance)
    except fastjsonschema.JsonSchemaException:
        return False
    return all(_numbers_pass(a, items) for path, items in numbers for a in _arrays_at(instance, path))


def compiled(schema: dict):
    """The schema's validator, checked and built once (the schema dict must not be changed afterwards)."""
    hit = _compiled.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    fast = jsonschema.validators.extend(cls, {"items": _fast_items(cls.VALIDATORS["items"])})
    validator = fast(schema)
    _compiled[id(schema)] = (schema, validator)  # the dict is kept, so its id is never reused
    return validator


def check(instance: Any, schema: dict) -> None:
    """`jsonschema.validate(instance, schema)`, with the compiled validator: raises the same best-match
    `jsonschema.ValidationError`."""
    validator = compiled(schema)  # checks the schema itself, once
    fast = _fast_validator(schema)
    if fast is not None and _fast_pass(fast, instance):
        return
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))  # decides, and says why
    if error is not None:
        raise error
