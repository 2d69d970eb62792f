"""Protocol files: a protocol written in TOML or YAML (see README.md, "Your own data"), checked whole
(every problem reported at once, each with its fix) and registered by name.

A ratio split (`[classes] ratio = [0.6, 0.2, 0.2]`, `seed = 0`) is drawn from the prepared dataset's
sorted class names, ordered by a seeded sha256, so it is the same on every machine. Registering files
and `bench protocol add` are in added.py.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path

from ..core import paths
from ..core.errors import BenchError
from ..core.files import sha256_bytes
from ..data import DATASETS, PreparedData, read_manifest_if_prepared
from .protocol import PROTOCOLS, SLUG, EpisodeSpec, Protocol, SplitSpec, Stage

SUFFIXES = {".toml": ".toml", ".yaml": ".yaml", ".yml": ".yaml"}
FILE_SETTINGS = ("few-shot", "cross-domain")
KEYS = {  # key: (required, example for the fix)
    "name": (True, 'name = "my-images-5w1s"  (a lower-case slug)'),
    "version": (True, "version = 1  (an integer; a changed protocol gets a new version)"),
    "setting": (True, 'setting = "few-shot"  (or "cross-domain")'),
    "description": (True, 'description = "what it tests, in a sentence"'),
    "dataset": (False, 'dataset = "my-images"  (few-shot)'),
    "train_dataset": (False, 'train_dataset = "my-images"  (cross-domain)'),
    "test_dataset": (False, 'test_dataset = "other-images"  (cross-domain)'),
    "domains": (False, '[domains] train = ["photo"]  test = ["sketch"]'),
    "classes": (False, "[classes] ratio = [0.6, 0.2, 0.2]  seed = 0  (or train/val/test lists)"),
    "ways": (True, "ways = 5  (classes per episode, at least 2)"),
    "shots": (True, "shots = 1  (labelled images per class)"),
    "queries": (False, "queries = 15  (test images per class)"),
    "image_size": (True, "image_size = 84  (pixels; images are resized to it)"),
    "channels": (False, "channels = 3  (3 for RGB, 1 for grey)"),
    "test_episodes": (False, "test_episodes = 600"),
    "train_steps": (False, "train_steps = 2000"),
}
DEFAULTS = {"queries": 15, "channels": 3, "test_episodes": 600, "train_steps": 2000}
MINIMA = {"version": 1, "ways": 2, "shots": 1, "queries": 1, "image_size": 8, "test_episodes": 1, "train_steps": 1}
CLASS_KEYS, DOMAIN_KEYS = ("train", "val", "test", "ratio", "seed"), ("train", "test")
GROUPS = ("all", *FILE_SETTINGS)  # what `bench submit --protocols` takes as groups


class ProtocolFileError(BenchError):
    """A protocol file that cannot be read or is wrong; the message lists every problem with its fix."""


def parse(path: Path) -> dict:
    if path.suffix.lower() not in SUFFIXES:
        raise ProtocolFileError(f"{path}: a protocol file ends in .toml, .yaml or .yml")
    try:
        text = path.read_text()
    except OSError as e:
        raise ProtocolFileError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            raw = tomllib.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as e:  # both parsers raise their own error types; the message has the line
        raise ProtocolFileError(f"{path}: not valid {path.suffix[1:].upper()} ({e})") from None
    if not isinstance(raw, dict):
        raise ProtocolFileError(
            f"{path}: expected a table of keys (name, version, setting, ...), got {type(raw).__name__}"
        )
    return raw


def _unknown(keys, known, where: str) -> list[str]:
    out = []
    for k in keys:
        if k not in known:
            close = difflib.get_close_matches(str(k), known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            out.append(f"unknown key {k!r}{where}: remove it ({hint})")
    return out


def _names(value, what: str, problems: list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        problems.append(f'{what} must be a non-empty list of names, e.g. ["a", "b"]')
        return ()
    if len(set(value)) != len(value):
        problems.append(f"{what} names a class or domain twice: list each once")
    return tuple(value)


def check(raw: dict) -> list[str]:
    """The problems that need no data: keys, types, values and the shape of [classes] and [domains]."""
    problems = _unknown(raw, list(KEYS), "")
    for k, (required, example) in KEYS.items():
        if required and k not in raw:
            problems.append(f"missing key {k!r}: add {example}")
    for k in ("name", "description", "setting", "dataset", "train_dataset", "test_dataset"):
        if k in raw and not (isinstance(raw[k], str) and raw[k].strip()):
            problems.append(f"{k} must be a non-empty string: {KEYS[k][1]}")
    for k in ("name", "dataset", "train_dataset", "test_dataset"):
        if isinstance(raw.get(k), str) and not SLUG.match(raw[k]):
            problems.append(f"{k} {raw[k]!r} is not a lower-case slug (a-z, 0-9 and '-')")
    for k, low in MINIMA.items():
        v = raw.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            problems.append(f"{k} must be an integer of at least {low}, got {v!r}: {KEYS[k][1]}")
    if "channels" in raw and raw["channels"] not in (1, 3):
        problems.append(f"channels must be 1 or 3, got {raw['channels']!r}")
    setting = raw.get("setting")
    if isinstance(setting, str) and setting not in FILE_SETTINGS:
        close = difflib.get_close_matches(setting, FILE_SETTINGS, n=1, cutoff=0.5)
        problems.append(
            f"unknown setting {setting!r}: use "
            + (f"{close[0]!r}" if close else " or ".join(repr(s) for s in FILE_SETTINGS))
        )
    name = raw.get("name")
    if isinstance(name, str) and name in PROTOCOLS and PROTOCOLS.get(name).source is None:
        problems.append(f"name {name!r} is a built-in protocol: give yours another name")
    if isinstance(name, str) and name in GROUPS:
        problems.append(f"name {name!r} is a protocol group of `bench submit`: give yours another name")
    if setting == "few-shot":
        if "dataset" not in raw:
            problems.append('a few-shot protocol needs dataset = "NAME" (a prepared dataset)')
        problems += [
            f'{k} is for cross-domain protocols: use dataset = "NAME" in a few-shot one'
            for k in ("train_dataset", "test_dataset")
            if k in raw
        ]
        if "classes" not in raw:
            problems.append(
                "a few-shot protocol tests on classes it never trained on: add [classes] with "
                "ratio = [0.6, 0.2, 0.2] and seed = 0, or train/val/test lists"
            )
    elif setting == "cross-domain":
        problems += [
            f'a cross-domain protocol needs {k} = "NAME"' for k in ("train_dataset", "test_dataset") if k not in raw
        ]
        if "dataset" in raw:
            problems.append("dataset is for few-shot protocols: use train_dataset and test_dataset instead")
    for table, keys in (("domains", DOMAIN_KEYS), ("classes", CLASS_KEYS)):
        if table in raw and not isinstance(raw[table], dict):
            problems.append(f"{table} must be a table: {KEYS[table][1]}")
        elif table in raw:
            problems += _unknown(raw[table], list(keys), f" in [{table}]")
            for k in ("train", "val", "test"):
                if k in raw[table] and k in keys:
                    _names(raw[table][k], f"{table}.{k}", problems)
    given = raw.get("classes")
    classes: dict = given if isinstance(given, dict) else {}
    lists = [k for k in ("train", "val", "test") if k in classes]
    if "ratio" in classes:
        problems += _check_ratio(classes, lists, setting)
    elif "seed" in classes:
        problems.append("classes.seed only goes with classes.ratio: add ratio = [0.6, 0.2, 0.2] or drop seed")
    elif classes:
        need = ("train", "test") if setting == "few-shot" else ("train",)
        problems += [
            f"classes.{k} is missing: list the {k} classes, or use ratio = [...] instead"
            for k in need
            if k not in classes
        ]
        seen: dict[str, str] = {}
        same = setting != "cross-domain" or raw.get("train_dataset") == raw.get("test_dataset")
        for part in lists:
            if part == "test" and not same:
                continue
            vals = classes[part] if isinstance(classes[part], list) else [classes[part]]
            for c in vals:
                if isinstance(c, str) and seen.setdefault(c, part) != part:
                    problems.append(
                        f"class {c!r} is in both classes.{seen[c]} and classes.{part}: a class belongs to one part"
                    )
    return problems


def _check_ratio(classes: dict, lists: list[str], setting) -> list[str]:
    out = []
    if lists:
        out.append(f"[classes] gives both ratio and {', '.join(lists)}: use one way to split")
    want = 2 if setting == "cross-domain" else 3
    r = classes["ratio"]
    what = "[train, val] of the train dataset's classes" if want == 2 else "[train, val, test]"
    if not (
        isinstance(r, list)
        and len(r) == want
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in r)
    ):
        out.append(f"classes.ratio must be {want} non-negative numbers {what}, got {r!r}")
    elif abs(sum(r) - 1) > 1e-6 or r[0] <= 0 or (want == 3 and r[2] <= 0):
        out.append(
            f"bad classes.ratio {r!r}: the parts must sum to 1 with train"
            + (" and test" if want == 3 else "")
            + " above 0, e.g. "
            + ("[0.6, 0.2, 0.2]" if want == 3 else "[0.8, 0.2]")
        )
    seed = classes.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        out.append(f"classes.seed must be a non-negative integer, got {seed!r}")
    return out


def ratio_split(names, ratio, seed: int) -> dict[str, tuple[str, ...]]:
    """Deterministic: sort, order by sha256(seed, name), cut by largest remainder into the ratio's parts."""
    names = sorted(names)
    order = sorted(names, key=lambda c: hashlib.sha256(f"{seed}\0{c}".encode()).hexdigest())
    n = len(names)
    counts = [int(r * n) for r in ratio]
    for i in sorted(range(len(ratio)), key=lambda i: -(ratio[i] * n - counts[i]))[: n - sum(counts)]:
        counts[i] += 1
    parts, at = {}, 0
    for part, c in zip(("train", "val", "test"), counts):
        parts[part] = tuple(sorted(order[at : at + c]))
        at += c
    return parts


def _dataset_facts(name: str, data_dir, problems: list[str]) -> dict | None:
    """The prepared dataset's manifest (None if it is built-in but not prepared yet)."""
    m = read_manifest_if_prepared(name, data_dir)
    if m is None and name not in DATASETS:
        problems.append(
            f"dataset {name!r} is neither built-in nor prepared in {paths.data_dir(data_dir)}: "
            f"prepare your folder first with `bench data prepare --from-folder PATH {name}`"
        )
    return m


def _class_names(name: str, manifest: dict | None, data_dir) -> list[str] | None:
    if manifest is None:
        return None
    if "class_names" in manifest:
        return list(manifest["class_names"])
    ds = PreparedData(name, paths.data_dir(data_dir) / name, manifest).dataset()  # a built-in: read its labels
    return sorted(set(ds["label"]))


def build(raw: dict, data_dir=None, source: tuple[str, str] | None = None) -> Protocol:
    problems = check(raw)
    if problems:
        raise ProtocolFileError("\n- ".join(["", *problems]))
    cross = raw["setting"] == "cross-domain"
    train_ds = raw["train_dataset"] if cross else raw["dataset"]
    test_ds = raw["test_dataset"] if cross else raw["dataset"]
    facts = {d: _dataset_facts(d, data_dir, problems) for d in dict.fromkeys((train_ds, test_ds))}
    domains = raw.get("domains", {})
    where = {}
    for part, ds in (("train", train_ds), ("test", test_ds)):
        if part in domains:
            want = _names(domains[part], f"domains.{part}", problems)
            m = facts[ds]
            if m and "domain" not in m.get("columns", []):
                problems.append(
                    f"domains.{part}: dataset {ds!r} has no domains (prepare a <domain>/<class>/ "
                    f"folder with --layout domain/class, or drop [domains])"
                )
            elif m and m.get("domains") and set(want) - set(m["domains"]):
                problems.append(
                    f"domains.{part}: {sorted(set(want) - set(m['domains']))} not in {ds!r} "
                    f"(it has {', '.join(m['domains'])})"
                )
            where[part] = (("domain", want),)
    classes = dict(raw.get("classes", {}))
    parts: dict[str, tuple[str, ...]] = {}
    if "ratio" in classes:
        names = _class_names(train_ds, facts[train_ds], data_dir)
        if names is None:
            problems.append(
                f"classes.ratio is drawn from {train_ds!r}'s class names, but it is not prepared "
                f"in {paths.data_dir(data_dir)}: prepare it first"
            )
        else:
            ratio = list(classes["ratio"]) + ([0] if cross else [])
            parts = {k: v for k, v in ratio_split(names, ratio, classes.get("seed", 0)).items() if v}
            if cross:
                parts.pop("test", None)
    else:
        parts = {k: _names(classes[k], f"classes.{k}", problems) for k in ("train", "val", "test") if k in classes}
        for part, cls in parts.items():
            ds = test_ds if part == "test" else train_ds
            fact = facts[ds]
            known = _class_names(ds, fact, data_dir) if fact and "class_names" in fact else None
            missing = sorted(set(cls) - set(known)) if known is not None else []
            if known is not None and missing:
                problems.append(
                    f"classes.{part}: {len(missing)} class(es) not in {ds!r}, e.g. {missing[:5]} "
                    f"(its classes: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''})"
                )
    for part, cls in parts.items():
        if len(cls) < raw["ways"]:
            problems.append(
                f"the {part} part has {len(cls)} class(es), fewer than ways = {raw['ways']}: "
                f"lower ways or give that part more classes"
            )
    if problems:
        raise ProtocolFileError("\n- ".join(["", *problems]))

    def split(part: str, ds: str) -> SplitSpec:
        return SplitSpec(
            ds,
            part=part if part in parts else None,
            classes=parts.get(part, ()),
            where=where.get("test" if part == "test" else "train", ()),
        )

    stage = Stage(
        train=split("train", train_ds),
        val=split("val", train_ds) if "val" in parts else None,
        test=(split("test", test_ds),),
    )
    return Protocol(
        name=raw["name"],
        version=raw["version"],
        setting=raw["setting"],
        description=raw["description"].strip(),
        stages=(stage,),
        episode=EpisodeSpec(raw["ways"], raw["shots"], raw.get("queries", DEFAULTS["queries"])),
        image_size=raw["image_size"],
        channels=raw.get("channels", DEFAULTS["channels"]),
        test_episodes=raw.get("test_episodes", DEFAULTS["test_episodes"]),
        train_steps=raw.get("train_steps", DEFAULTS["train_steps"]),
        tags=("file",),
        source=source,
    )


def read(path: str | os.PathLike, data_dir=None) -> Protocol:
    """A checked protocol from a file, not registered."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ProtocolFileError(f"protocol file {path} does not exist")
    raw = parse(path)
    try:
        return build(raw, data_dir, source=(str(path), sha256_bytes(path.read_bytes())))
    except ProtocolFileError as e:
        n = str(e).count("\n- ")
        raise ProtocolFileError(f"{path}: {n} problem(s); fix them and try again:{e}") from None
