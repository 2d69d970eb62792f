"""Whether a split can supply the episodes a protocol asks for."""

from __future__ import annotations

from ..core.errors import DataError
from ..protocols import EpisodeSpec
from ..store import EpisodeView


def check_fillable(view: EpisodeView, spec: EpisodeSpec) -> None:
    """Fail early, and say why, when the split cannot supply the episodes asked for."""
    if spec.ways > view.n_classes:
        raise DataError(
            f"{spec.ways}-way episodes need {spec.ways} classes, but split {view.label} has only "
            f"{view.n_classes}. Use fewer ways or a larger split."
        )
    need = spec.shots + spec.queries
    short = int((view.counts < need).sum())
    if short:
        smallest = int(view.counts.min())
        raise DataError(
            f"{spec.shots}-shot {spec.queries}-query episodes need {need} images per class, but "
            f"{short} class(es) of split {view.label} have fewer (smallest: {smallest}). "
            f"Lower shots + queries to at most {smallest}."
        )
