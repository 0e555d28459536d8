"""The synthetic-data job: generate instruction/response pairs from documents, filter, register.

`SyntheticJobs(servicer)` owns the JobManager of kind "synthetic_data" (records at
records/synthetic_data_jobs/). A job reads its documents and seeds again (the request's checks
ran at CreateSyntheticDataJob), cuts the documents into chunks, and for each candidate asks the
served model, through the inference service's batched Generate, for an instruction about a chunk
(step 1) and then for its answer with the chunk as context (step 2). PairFilter drops what fails
a filter; the survivors become an ALPACA dataset (instruction, input = the chunk, output)
registered through the data service's own registration path, with a SyntheticProvenance on its
record. Nothing is registered unless the job gets that far: a failed or cancelled job leaves no
dataset.
"""
from __future__ import annotations

import json
import logging
import random
import time
import uuid

from tunesmith.api.data.v1 import data_pb2
from tunesmith.api.inference.v1 import inference_pb2
from tunesmith.core.jobs import JobCancelled, JobControl, JobFailed, JobManager
from tunesmith.data.synthetic_filters import FilterSettings, Pair, PairFilter, clean_instruction
from tunesmith.data.synthetic_prompts import PROMPT_VERSION, Seed, instruction_prompt, response_prompt
from tunesmith.data.synthetic_validation import load_inputs, served_model

log = logging.getLogger("tunesmith.data.synthetic")

#: Candidates per Generate call (the inference service batches them; at most 256).
BATCH = 16
GENERATE_TIMEOUT = 1800.0


class SyntheticJobs:
    """The data service's synthetic-data jobs (create through `manager.create`)."""

    def __init__(self, servicer):
        self.servicer = servicer
        self.rt = servicer.rt
        self.manager = JobManager(self.rt.storage, collection="synthetic_data_jobs", record_cls=data_pb2.SyntheticDataJob,
                                  kind="synthetic_data", noun="synthetic-data job", validate=self._validate,
                                  execute=self._execute)

    def _validate(self, record, control: JobControl) -> None:
        served_model(self.rt, record.spec.model)  # still READY (checked at create too)

    def _execute(self, record, control: JobControl) -> None:
        spec = record.spec
        try:
            documents, seeds = load_inputs(spec, self.rt, self.servicer.datasets)
        except Exception as exc:  # noqa: BLE001 - a document changed since the request was accepted
            field = getattr(exc, "field", "") or ""
            raise JobFailed("invalid_input", str(exc), field) from None
        name, backend = served_model(self.rt, spec.model)
        rng = random.Random(spec.sampling.seed)
        plan: list[tuple[int, str]] = []  # (document index, chunk) per candidate
        provenance_docs = []
        for d, doc in enumerate(documents):
            chunks = doc.chunks(spec.chunk_chars)
            provenance_docs.append(data_pb2.SyntheticDocument(source=doc.source, sha256=doc.sha256, chunks=len(chunks)))
            plan += [(d, chunks[j % len(chunks)]) for j in range(spec.examples_per_document)]
        result = record.result
        result.documents, result.chunks = len(documents), sum(p.chunks for p in provenance_docs)
        result.backend = backend
        f = spec.filters
        pair_filter = PairFilter(FilterSettings(f.min_instruction_chars, f.min_response_chars, f.max_rouge_l,
                                                f.keep_truncated, f.allow_statements, f.allow_off_topic),
                                 [s.instruction for s in seeds])
        control.log(f"{len(plan)} candidates from {len(documents)} document(s), {result.chunks} chunk(s), "
                    f"{len(seeds)} seed(s), model {spec.model!r} on {backend}")
        kept: list[dict] = []
        started = time.monotonic()
        for b, first in enumerate(range(0, len(plan), BATCH)):
            control.check_cancelled()
            batch = plan[first:first + BATCH]
            demos = [rng.sample(seeds, min(spec.demonstrations, len(seeds))) for _ in batch]
            raw = self._generate(name, [instruction_prompt(chunk, dm) for (_, chunk), dm in zip(batch, demos)],
                                 spec, 2 * b, result, stop=["\n"])
            # One line each; a line cut at max_new_tokens is no instruction ("format") unless
            # filters.keep_truncated.
            cut = inference_pb2.FINISH_REASON_LENGTH
            instructions = ["" if c.finish_reason == cut and not spec.filters.keep_truncated
                            else clean_instruction(c.text) for c in raw]
            # Step 2 only for instructions the format check accepts; the rest fail "format".
            ask = [i for i, ins in enumerate(instructions) if pair_filter.instruction_ok(ins)]
            answers = {}
            if ask:
                control.check_cancelled()
                out = self._generate(name, [response_prompt(instructions[i], batch[i][1], demos[i]) for i in ask],
                                     spec, 2 * b + 1, result)
                answers = dict(zip(ask, out))
            for i, (_, chunk) in enumerate(batch):
                answer = answers.get(i)
                pair = Pair(instructions[i], chunk, answer.text.strip() if answer else "",
                            truncated=bool(answer) and answer.finish_reason == inference_pb2.FINISH_REASON_LENGTH)
                if not pair_filter.check(pair):
                    kept.append({"instruction": pair.instruction.strip(), "input": chunk, "output": pair.response})
            result.candidates = first + len(batch)
            result.kept = len(kept)
            result.filtered.clear()
            result.filtered.update(pair_filter.counts)
            result.generate_seconds = time.monotonic() - started
            elapsed = time.monotonic() - started
            eta = elapsed / result.candidates * (len(plan) - result.candidates)
            control.progress(step=result.candidates, total_steps=len(plan), phase="generate",
                             elapsed_seconds=elapsed, eta_seconds=eta)
            control.metrics("synthetic_filters", {"candidates": result.candidates, "kept": result.kept,
                                                  **{k: float(v) for k, v in pair_filter.counts.items()}})
        control.check_cancelled()
        if not kept:
            raise JobFailed("no_examples_kept", f"all {result.candidates} candidates were filtered out "
                            f"({', '.join(f'{k}: {v}' for k, v in pair_filter.counts.items() if v)}); nothing was "
                            "registered. Try other seeds, more examples_per_document or looser spec.filters",
                            "spec.filters")
        dataset = self._register(record, kept, seeds, provenance_docs)
        if control.cancelled.is_set():  # cancelled while registering: take it back
            self.servicer.datasets.delete(dataset.id)
            raise JobCancelled()
        result.dataset_id = dataset.id
        control.log(f"registered dataset {dataset.id} with {len(kept)} of {result.candidates} candidates "
                    f"({', '.join(f'{k}: {v}' for k, v in pair_filter.counts.items())} filtered)")
        control.save()

    def _generate(self, name: str, prompts: list, spec, call_index: int, result, stop=None) -> list:
        """Completions of `prompts` (chat conversations) in one Generate call."""
        from tunesmith.client.errors import TunesmithClientError
        from tunesmith.client.inference import InferenceClient

        s = spec.sampling
        try:
            with InferenceClient(self.rt.peers["inference"]) as client:
                response = client.generate_response(
                    name, prompts, timeout=GENERATE_TIMEOUT, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                    top_p=s.top_p, seed=s.seed + 1 + call_index,  # never 0: the inference service reads 0 as unseeded
                    repetition_penalty=s.repetition_penalty,
                    stop=stop)
        except (TunesmithClientError, KeyError) as exc:
            raise JobFailed("generation_failed", f"model {spec.model!r} could not generate: {exc}", "spec.model") from None
        result.completion_tokens += sum(c.completion_tokens for c in response.completions)
        return list(response.completions)

    def _register(self, record, kept: list[dict], seeds: list[Seed], documents) -> data_pb2.Dataset:
        """Register `kept` as an ALPACA JSONL dataset through the data service's own path."""
        from tunesmith.data.validation import accept_dataset_spec

        spec = record.spec
        name = spec.dataset_name or f"synthetic-{record.job.id}"
        ds_spec = data_pb2.DatasetSpec(name=name, format=data_pb2.FILE_FORMAT_JSONL, schema=data_pb2.SCHEMA_ALPACA,
                                       split=spec.split)
        pspec = accept_dataset_spec(ds_spec, self.rt, "spec")
        result = data_pb2.SyntheticDataResult()
        result.CopyFrom(record.result)
        provenance = data_pb2.SyntheticProvenance(
            job_id=record.job.id, model=spec.model, backend=record.result.backend, sampling=spec.sampling,
            filters=spec.filters, examples_per_document=spec.examples_per_document, chunk_chars=spec.chunk_chars,
            demonstrations=spec.demonstrations, prompt_template_version=PROMPT_VERSION, documents=documents,
            seeds=len(seeds), result=result)
        with self.rt.storage.staging_dir() as tmp:
            path = tmp / f"synthetic-{uuid.uuid4().hex[:8]}.jsonl"
            with open(path, "w", encoding="utf-8") as out:
                for row in kept:
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
            response = self.servicer._register(path, f"synthetic-{record.job.id}.jsonl", ds_spec, pspec, synthetic=provenance)
        return response.dataset

