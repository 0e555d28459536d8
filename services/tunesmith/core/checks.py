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


def check_adapter_artifact(storage, uri: str, field: str):
    """The local folder of a stored peft adapter artifact, or InvalidArgument (not an artifact
    URI) / NotFound (no adapter_config.json there), naming `field`."""
    from tunesmith.core.errors import TunesmithError

    if not uri:
        raise InvalidArgument("is required: the adapter artifact (artifact://adapter/...)", field=field)
    try:
        folder = storage.local_path(uri)
        present = (folder / "adapter_config.json").is_file()
    except TunesmithError as exc:
        raise InvalidArgument(exc.message, field=field) from None
    if not present:
        raise NotFound(f"{uri} is not a stored peft adapter (no adapter_config.json)", field=field,
                       code="unknown_adapter")
    return folder


def check_adapter_base(models, folder, uri: str, model: str, field: str, *, model_uri: str = "",
                       unknown_ok: bool = False) -> None:
    """FailedPrecondition unless the adapter in `folder` was trained on `model` (its recorded
    base artifact is the model's artifact, `model_uri` when the caller knows it). Adapters
    without tunesmith-adapter.json (plain peft folders) are compared by base_model_name_or_path.
    unknown_ok: a base named by something that is neither a model artifact URI nor a model-store
    name (a hub id, a local path) cannot be compared and is accepted (the inference service: a
    shape mismatch then fails in the engine)."""
    from tunesmith.core.formats.adapter import base_reference
    from tunesmith.core.models import BUNDLED_NAME
    from tunesmith.core.storage import is_artifact_uri

    base = base_reference(folder)
    if not base:
        return  # a plain peft folder that names no base: nothing to compare
    actual = model_uri
    if not actual and not (model == BUNDLED_NAME and not models.is_stored(model)):
        try:
            actual = models.get(model).artifact.uri
        except (NotFound, InvalidArgument):
            actual = ""
    if base in (actual, model):
        return
    if unknown_ok:
        try:
            named = base if is_artifact_uri(base) else (models.get(base).artifact.uri if models.is_stored(base) else "")
        except (NotFound, InvalidArgument):  # not a model-store name
            named = ""
        if not named or named == actual:
            return
    raise FailedPrecondition(
        f"adapter {uri} was trained on {base}, not on {model!r}"
        + (f" ({actual})" if actual and actual != model else "")
        + "; pair it with its own base model", field=field, code="adapter_base_mismatch")
