"""Artifact and file formats shared through storage: one module, one definition, per kind.

    dataset  a prepared dataset folder (dataset.json + <split>.jsonl) and the dataset record
    adapter  a peft adapter folder plus tunesmith-adapter.json (base model reference, method)
    model    a model-store entry (models/<name>.json)
    report   an evaluation report artifact (report.json + outputs.jsonl)
    worker   a training job's worker files (input, result, error, event lines)
    serve_reference  greedy answers of a trained model in peft, for the serve_as hand-off check

Contracts: every file carries "format" and a "MAJOR.MINOR" "version"; each kind has one typed
writer and one typed reader (dataclasses with to_dict/from_dict); a reader refuses an unknown
major version with FormatError naming the file. References between artifacts are
artifact://<kind>/<sha256> URIs, never local paths. Only the standard library and
tunesmith.core are imported here: no protos, no torch.
"""
from tunesmith.core.formats._common import FormatError

__all__ = ["FormatError"]
