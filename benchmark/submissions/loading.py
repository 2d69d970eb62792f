"""Loading a submission: a Python file with one `MetaLearner` subclass, checked against the contract.

It is imported under a private module name and never registered, so it cannot shadow or clash with
a built-in method; the record it produces names the file and its sha256.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import re
import sys
import traceback
import uuid
from pathlib import Path

import pytorch_lightning as pl
import torch

import baselines  # noqa: F401  (the built-in methods: a submission may not take their names)

from ..core.errors import BenchError, HParamError
from ..core.files import sha256_bytes
from ..methods import ALGORITHMS, MetaLearner, TaskInfo
from ..protocols import PROTOCOLS, Protocol

REQUIRED_METHODS = ("predict", "training_step", "configure_optimizers")
PREDICT_PARAMS = ("support_x", "support_y", "query_x", "ways")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # it becomes a folder name under results/
DEFAULT_DRY_PROTOCOL = "omniglot-5w1s"


class SubmissionError(BenchError):
    """A submission file that does not meet the contract; the message lists every problem."""


def builtin_methods() -> dict[str, type[MetaLearner]]:
    return dict(ALGORITHMS.items())


def parse_spec(spec: str) -> tuple[Path, str | None]:
    """`PATH.py` or `PATH.py:ClassName` (a Windows drive letter's colon is not a separator)."""
    path, cls = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        path, cls = head, tail
    p = Path(path).expanduser()
    if p.suffix != ".py":
        raise SubmissionError(f"{spec!r}: a submission is a Python file, PATH.py or PATH.py:ClassName")
    if not p.is_file():
        raise SubmissionError(f"{p}: no such file")
    return p, cls


def _import_file(path: Path, data: bytes):
    """Run the file as a fresh module with a unique name, so two submissions never collide."""
    mod_name = f"_metabench_submission_{sha256_bytes(data)[:12]}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise SubmissionError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses, pickling and typing look the module up here
    before = builtin_methods()  # imported first, so a file that imports baselines keeps them registered
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: report where it failed, in their file
        sys.modules.pop(mod_name, None)
        frames = [
            f
            for f in traceback.extract_tb(e.__traceback__)
            if Path(f.filename) == path.resolve() or Path(f.filename) == path
        ]
        line = e.lineno if isinstance(e, SyntaxError) else (frames[-1].lineno if frames else None)
        where = f" (line {line})" if line else ""
        raise SubmissionError(f"{path}: importing it failed{where}: {type(e).__name__}: {e}") from e
    finally:
        # a submission must not register itself; undo it so the built-in registry stays as it was
        added = [n for n in ALGORITHMS if n not in before]
        for n in added:
            ALGORITHMS.unregister(n)
    module.__dict__["__metabench_registered__"] = added
    return module


def _defined_here(module) -> list[type]:
    return [obj for obj in vars(module).values() if isinstance(obj, type) and obj.__module__ == module.__name__]


def _find_class(module, path: Path, class_name: str | None) -> type:
    classes = _defined_here(module)
    if class_name:
        obj = getattr(module, class_name, None)
        if not isinstance(obj, type):
            names = [c.__name__ for c in classes]
            close = difflib.get_close_matches(class_name, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SubmissionError(
                f"{path}: has no class {class_name!r}.{hint} Classes defined there: {', '.join(names) or 'none'}"
            )
        return obj
    learners = [c for c in classes if issubclass(c, MetaLearner)]
    if len(learners) == 1:
        return learners[0]
    if len(learners) > 1:
        several = ", ".join(c.__name__ for c in learners)
        raise SubmissionError(
            f"{path}: defines several MetaLearner subclasses ({several}); name the one to submit as {path}:ClassName"
        )
    plain = [c.__name__ for c in classes if issubclass(c, pl.LightningModule)]
    if plain:
        raise SubmissionError(
            f"{path}: {', '.join(plain)} is a plain pytorch_lightning.LightningModule; a "
            f"submission must subclass benchmark.algorithms.MetaLearner (see its docstring "
            f"for the contract)"
        )
    raise SubmissionError(
        f"{path}: defines no MetaLearner subclass (classes defined there: "
        f"{', '.join(c.__name__ for c in classes) or 'none'}); a submission is one "
        f"`class MyMethod(benchmark.algorithms.MetaLearner)` in one file"
    )


def contract_problems(cls: type) -> list[str]:
    """Everything about `cls` that breaks the algorithm contract (empty when it meets it)."""
    problems = []
    if not issubclass(cls, MetaLearner):
        if issubclass(cls, pl.LightningModule):
            problems.append(
                "it is a plain pytorch_lightning.LightningModule; subclass benchmark.algorithms.MetaLearner instead"
            )
        else:
            problems.append("it does not subclass benchmark.algorithms.MetaLearner")
    base = MetaLearner if issubclass(cls, MetaLearner) else pl.LightningModule
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        problems.append('`name` is missing or empty (a short method name, e.g. name = "mymethod")')
    elif not NAME_RE.match(name):
        problems.append(f"`name` {name!r} must be letters, digits and _.+- (it becomes a folder name)")
    else:
        builtin = builtin_methods()
        if name in builtin and builtin[name] is not cls:
            problems.append(
                f"`name` {name!r} is a built-in method ({builtin[name].paper}); choose another, "
                f'e.g. name = "{name}-{cls.__name__.lower()}" or name = "my-{name}"'
            )
    paper = getattr(cls, "paper", "")
    if not isinstance(paper, str) or not paper.strip():
        problems.append("`paper` is missing or empty (a one-line citation string)")
    td = getattr(cls, "training_data", None)
    if td not in ("episodes", "batches"):
        problems.append(f"`training_data` is {td!r}; it must be 'episodes' or 'batches'")
    hp = getattr(cls, "HPARAMS", None)
    if not isinstance(hp, dict):
        problems.append(f"`HPARAMS` must be a dict of hyper-parameter defaults, not {type(hp).__name__}")
    elif td == "batches" and "batch_size" not in hp:
        problems.append("training_data = 'batches' needs a `batch_size` entry in HPARAMS")
    missing = []
    for m in REQUIRED_METHODS:
        own = getattr(cls, m, None)
        if own is None or own is getattr(base, m, None) or own is getattr(pl.LightningModule, m, None):
            missing.append(m)
            problems.append(f"`{m}` is not implemented (the base class's is inherited)")
    predict = getattr(cls, "predict", None)
    if callable(predict) and "predict" not in missing:
        try:
            params = list(inspect.signature(predict).parameters.values())[1:]  # drop self
        except (TypeError, ValueError):
            params = None
        if params is not None:
            names = tuple(p.name for p in params[:4])
            extra = [
                p.name
                for p in params[4:]
                if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            if names != PREDICT_PARAMS or extra:
                got = ", ".join(p.name for p in params)
                problems.append(f"`predict` must take (support_x, support_y, query_x, ways), not ({got})")
    return problems


def dry_check(cls: type[MetaLearner], protocol: Protocol, hparams: dict | None = None) -> None:
    """Build the method for a tiny task shaped like `protocol` and check predict's output on 2 random
    5-way 1-shot episodes with 2 queries per class: catches shape bugs before any training."""
    b, n, k, q = 2, 5, 1, 2
    c, s = protocol.channels, protocol.image_size
    task = TaskInfo(n, k, q, s, c, n_train_classes=10)
    where = f"dry check of {cls.__name__} on {b} random {n}-way {k}-shot episodes ({c}x{s}x{s}, {q} queries)"
    try:
        model = cls(task, **(hparams or {}))
    except HParamError:
        raise
    except Exception as e:
        raise SubmissionError(f"{where}: building it failed: {type(e).__name__}: {e}") from e
    g = torch.Generator().manual_seed(0)
    sx = torch.randn(b, n * k, c, s, s, generator=g)
    sy = torch.arange(n).repeat_interleave(k).expand(b, -1).contiguous()
    qx = torch.randn(b, n * q, c, s, s, generator=g)
    model.eval()
    try:
        with torch.no_grad():
            logits = model.predict(sx, sy, qx, n)
    except Exception as e:
        raise SubmissionError(f"{where}: predict raised {type(e).__name__}: {e}") from e
    want = (b, n * q, n)
    if not isinstance(logits, torch.Tensor):
        raise SubmissionError(
            f"{where}: predict returned {type(logits).__name__}, not a tensor of logits "
            f"[episodes, queries, ways] = {list(want)}"
        )
    if tuple(logits.shape) != want:
        raise SubmissionError(
            f"{where}: predict returned logits of shape {list(logits.shape)}; the contract "
            f"is [episodes, queries, ways] = {list(want)}"
        )
    if not torch.isfinite(logits).all():
        raise SubmissionError(f"{where}: predict returned non-finite logits")


def inspect_file(path: Path, data: bytes, class_name: str | None) -> tuple[type, list[str]]:
    """Import the file's bytes and find its class: (class, every way it breaks the contract)."""
    module = _import_file(path, data)
    cls = _find_class(module, path, class_name)
    problems = contract_problems(cls)
    if module.__metabench_registered__:
        problems.append(
            "the file registers a method with the built-in registry (@register); remove it: "
            "submissions are loaded by `bench submit`, not registered"
        )
    return cls, problems


def contract_error(path: Path, class_name: str, problems: list[str]) -> SubmissionError:
    return SubmissionError(
        f"{path}: {class_name} does not meet the method contract "
        f"(benchmark/methods/contract.py):\n  - " + "\n  - ".join(problems)
    )


def load_submission(
    spec: str, protocols: list[str] | None = None, hparams: dict | None = None, dry: bool = True
) -> tuple[type[MetaLearner], dict]:
    """Import `PATH.py[:ClassName]` in this process, check the contract (and a dry predict for each image
    shape among `protocols`, default omniglot-5w1s); (class, source info for the record). `bench submit`
    and `bench verify` do this in a sandbox (sandbox.py) instead."""
    path, class_name = parse_spec(spec)
    data = path.read_bytes()
    cls, problems = inspect_file(path, data, class_name)
    if problems:
        raise contract_error(path, cls.__name__, problems)
    assert issubclass(cls, MetaLearner)  # contract_problems says so otherwise
    if dry:
        shapes: dict[tuple[int, int], Protocol] = {}
        for name in protocols or [DEFAULT_DRY_PROTOCOL]:
            p = PROTOCOLS.get(name)
            if cls.supports(p) is None:
                shapes.setdefault((p.image_size, p.channels), p)
        for p in shapes.values():
            dry_check(cls, p, hparams)
    return cls, {"file": str(path), "class": cls.__name__, "sha256": sha256_bytes(data)}
