"""What the page shows of a record that `bench sweep` wrote: the configuration it selected on validation data,
the candidates it chose among, and where the sweep's trials are (an ordinary results folder of their own)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .tables import md_escape


@dataclass(frozen=True)
class SweepPart:
    caption: str  # markdown
    candidates: pd.DataFrame | None  # one row per configuration the selection chose among


def _values(hparams) -> str:
    if not isinstance(hparams, dict):
        return "-"
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hparams.items())) or "-"


def _list(x) -> list:
    return x if isinstance(x, list) else []


def _pct(x) -> str:
    return f"{100 * x:.2f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def sweep_part(record: dict) -> SweepPart | None:
    """The sweep's part of a record's detail view; None for a record no sweep wrote."""
    sw = record.get("sweep")
    if not isinstance(sw, dict):
        return None
    name = md_escape(str(sw.get("name", "?")))
    if sw.get("role") != "selected":
        return SweepPart(f"A trial of sweep **{name}** (configuration {sw.get('index', '?')}).", None)
    trials = _list(sw.get("trials"))
    chosen = md_escape(f"configuration {sw.get('config')} of {sw.get('configs')}, {_values(sw.get('hparams'))}")
    caption = (
        f"**Selected by sweep {name}** on the protocol's validation episodes, never its test episodes (rule "
        f"{md_escape(str(sw.get('rule')))}: the best validation accuracy averaged over seeds): {chosen}, validation "
        f"accuracy {_pct(sw.get('val_accuracy'))}%. Its trials ({md_escape(', '.join(map(str, trials)))}) are records "
        f"in the sweep's folder, {md_escape(str(sw.get('folder', '?')))} (relative to this results folder), which "
        f"bench leaderboard --results FOLDER shows in full."
    )
    rows = [
        {
            "Configuration": c.get("config"),
            "Selected": "✔" if c.get("config") == sw.get("config") else "",
            "Hyper-parameters": _values(c.get("hparams")),
            "Seeds": ", ".join(map(str, _list(c.get("seeds")))),
            "Validation (%)": _pct(c.get("val_accuracy")),
            "Trials": ", ".join(map(str, _list(c.get("trials")))),
        }
        for c in _list(sw.get("candidates"))
        if isinstance(c, dict)
    ]
    return SweepPart(caption, pd.DataFrame(rows) if rows else None)


def render_part(ui, record: dict) -> None:
    """A sweep's part of a record's detail view (the selected configuration, the candidates) on a
    Streamlit-like `ui`; nothing for a record no sweep wrote."""
    if (part := sweep_part(record)) is not None:
        ui.markdown(part.caption)
        if part.candidates is not None:
            ui.dataframe(part.candidates, hide_index=True)
