"""Existence checks shared by the services' request validation: models and dataset splits.

Cheap by design: nothing here imports torch or converts a model (the bundled model counts as
present when its package is installed; its one-time import happens in the job).
"""
from __future__ import annotations

from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound


def check_model(models, name: str, field: str) -> None:
    """NotFound (naming `field`) unless `name` is a model-store name or model artifact URI here."""
    from tunesmith.core.models import BUNDLED_NAME, find_bundled_gguf

    if not name:
        raise InvalidArgument("is required: a model-store name (e.g. smollm2-135m-instruct) or a model "
                              "artifact URI", field=field)
    if name == BUNDLED_NAME and not models.is_stored(name):
        try:
            find_bundled_gguf()
        except (NotFound, FailedPrecondition) as exc:
            raise FailedPrecondition(exc.message, field=field, code="bundled_model_missing") from None
        return
    try:
        models.get(name)
    except (NotFound, InvalidArgument) as exc:
        raise NotFound(exc.message, field=field, code="unknown_model") from None


def check_split(dataset, split: str, field: str, *, need_rows: bool = True) -> None:
    """NotFound unless `dataset` (a dataset record: .id and .splits with .name, .rows) has the
    split; FailedPrecondition when it is empty and rows are needed."""
    splits = {s.name: s.rows for s in dataset.splits}
    if split not in splits:
        raise NotFound(f"dataset {dataset.id} has no split {split!r} (splits: {', '.join(sorted(splits)) or 'none'})",
                       field=field, code="unknown_split")
    if need_rows and not splits[split]:
        raise FailedPrecondition(f"split {split!r} of dataset {dataset.id} has no rows", field=field,
                                 code="empty_split")
