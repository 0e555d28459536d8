"""`tunesmith synth`: a synthetic-data job through the data service (SDK only), then a summary.

Defaults: the bundled sample document and seed examples (project-written, Apache-2.0). The
documents must be readable by the data service (paths are made absolute here). Exit status 0
when the job registers a dataset, 1 otherwise.
"""
from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    """Register the `synth` subcommand on the `tunesmith` parser's subparsers."""
    p = sub.add_parser("synth", help="generate an instruction dataset from documents with a served model")
    p.add_argument("--model", required=True, help="a model served by the inference service (or base:adapter)")
    p.add_argument("--document", action="append", default=[],
                   help="a UTF-8 text file (repeatable; default: the bundled water-cycle sample)")
    p.add_argument("--seeds", default="", help="JSONL of seed examples (instruction, input, output); "
                                               "default: the bundled seeds")
    p.add_argument("--examples-per-document", type=int, default=0, help="candidates per document (default 4)")
    p.add_argument("--chunk-chars", type=int, default=0, help="characters per chunk (default 1500)")
    p.add_argument("--max-new-tokens", type=int, default=0, help="per instruction and per response (default 96)")
    p.add_argument("--temperature", type=float, default=None, help="default 0.7; 0 = greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rouge-l", type=float, default=None, help="similarity filter threshold (default 0.7)")
    p.add_argument("--name", default="", help="name of the registered dataset")
    p.add_argument("--data-address", default="localhost:50051")
    p.add_argument("--json", action="store_true", help="print the finished job as JSON")
    p.set_defaults(func=cmd_synth)


def _seeds(path: str) -> list[dict]:
    from tunesmith.data.synthetic_documents import sample_seeds

    if not path:
        return sample_seeds()
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.append({"instruction": row.get("instruction", ""), "input": row.get("input", ""),
                        "response": row.get("output", row.get("response", ""))})
    return out


def cmd_synth(args) -> int:
    from google.protobuf import json_format

    from tunesmith.api.common.v1 import common_pb2
    from tunesmith.api.data.v1 import data_pb2
    from tunesmith.client.data import DataClient
    from tunesmith.client.errors import TunesmithClientError
    from tunesmith.data.synthetic_documents import SAMPLE_DOCUMENT

    sampling = data_pb2.SyntheticSampling(max_new_tokens=args.max_new_tokens, seed=args.seed)
    if args.temperature is not None:
        sampling.temperature = args.temperature
    filters = data_pb2.SyntheticFilters()
    if args.max_rouge_l is not None:
        filters.max_rouge_l = args.max_rouge_l
    spec = data_pb2.SyntheticDataSpec(
        document_uris=[str(Path(d).resolve()) for d in args.document] or [str(SAMPLE_DOCUMENT)], model=args.model,
        seed_examples=[data_pb2.SeedExample(**s) for s in _seeds(args.seeds)],
        examples_per_document=args.examples_per_document, chunk_chars=args.chunk_chars, sampling=sampling,
        filters=filters, dataset_name=args.name)
    try:
        with DataClient(args.data_address) as client:
            job = client.create_synthetic_data_job(spec)
            for event in client.events(job.job.id):
                if event.HasField("progress"):
                    print(f"\r{event.progress.step}/{event.progress.total_steps} candidates", end="", flush=True)
            print()
            job = client.get_job(job.job.id)
            rows = []
            if job.result.dataset_id:
                rows = client.preview_dataset(job.result.dataset_id, limit=3).examples
    except TunesmithClientError as exc:
        print(f"tunesmith synth: {exc}")
        return 1
    if args.json:
        print(json_format.MessageToJson(job, preserving_proto_field_name=True))
    else:
        r = job.result
        print(f"{common_pb2.JobState.Name(job.job.state).removeprefix('JOB_STATE_')}: {r.candidates} candidates, "
              f"{r.kept} kept; filtered {dict(r.filtered)}; {r.generate_seconds:.0f} s generating")
        if job.job.error.message:
            print(f"error: {job.job.error.message}")
        if r.dataset_id:
            print(f"dataset {r.dataset_id}")
        for ex in rows:
            print(f"- {ex.fields['instruction']}\n  -> {ex.fields['output']}")
    return 0 if job.result.dataset_id else 1
