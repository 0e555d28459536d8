"""Service side of the serve_as hand-off (TrainingJobSpec.serve_as, .serve_check): once a job
has succeeded (and passed its gate, where it has one), load its model into the inference service
over gRPC, generate greedily on the prompts of the job's serve reference (written by the worker:
tunesmith.trainer.reference) and compare, answer by answer; check that the served model's EOS
tokens are the base's. Reported in TrainingResult.served_model / .serve_check and as job events.

What is served: the merged model (spec.merge) or a full fine-tune's model under serve_as; else the
base under "<serve_as>-base" with adapters enabled (reused when it already serves that base) and
the adapter on it under serve_as. The trainer never imports the inference service: these are the
ordinary LoadModel / LoadAdapter / Generate calls any client makes.

An answer agrees when its text, token count and finish reason equal peft's (Completion carries no
token ids). A disagreement or an EOS problem is a warning event with examples; with
serve_check.strict it fails the job (serve_check_failed) and unloads what was served.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tunesmith.core.jobs import JobCancelled, JobControl, JobFailed
from tunesmith.core.validation import SERVED_NAME  # noqa: F401  (the inference service's rule; validation imports it here)

BASE_SUFFIX = "-base"
MAX_PROMPTS = 64
MAX_MAX_NEW_TOKENS = 512
MAX_EXAMPLES = 3
LOAD_TIMEOUT_SECONDS = 900.0
POLL_SECONDS = 0.5
RPC_TIMEOUT = 30.0
GENERATE_TIMEOUT = 600.0


# --- EOS: a pure check of model folders (JSON files only, no transformers) -----------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _ids(value: Any) -> set[int]:
    if isinstance(value, bool) or value is None:
        return set()
    if isinstance(value, int):
        return {value}
    if isinstance(value, (list, tuple)):
        return {int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)}
    return set()


def folder_eos(folder: Path | str) -> tuple[str, set[int]]:
    """(the tokenizer's EOS token, the generation config's eos_token_id(s)) of a Hugging Face
    folder: tokenizer_config.json (or special_tokens_map.json) and generation_config.json (else
    config.json). ("", set()) for what a folder does not say."""
    folder = Path(folder)
    token = ""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        eos = _read_json(folder / name).get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        if isinstance(eos, str) and eos:
            token = eos
            break
    ids = _ids(_read_json(folder / "generation_config.json").get("eos_token_id"))
    if not ids:
        ids = _ids(_read_json(folder / "config.json").get("eos_token_id"))
    return token, ids


def eos_problems(base_dir: Path | str, served_dir: Path | str) -> list[str]:
    """Why the served folder's EOS differs from the base's (empty when it does not): the
    tokenizer's EOS token and the generation config's eos_token_id(s). What a served folder
    leaves out (no tokenizer files next to an adapter) is not a difference."""
    base_token, base_ids = folder_eos(base_dir)
    token, ids = folder_eos(served_dir)
    problems = []
    if token and base_token and token != base_token:
        problems.append(f"the served tokenizer's EOS token is {token!r}, the base's is {base_token!r}")
    if ids and base_ids and ids != base_ids:
        problems.append(f"the served generation config stops on eos_token_id {sorted(ids)}, the base's on "
                        f"{sorted(base_ids)}")
    if base_ids and not ids and (Path(served_dir) / "config.json").is_file():
        problems.append(f"the served model names no eos_token_id (the base's is {sorted(base_ids)}): generation "
                        f"would not stop")
    return problems


# --- comparing answers ----------------------------------------------------------------------
def finish_name(reason: int) -> str:
    """"stop", "length", "cancelled" or "unspecified" for an inference FinishReason."""
    from tunesmith.api.inference.v1 import inference_pb2

    name = inference_pb2.FinishReason.Name(reason) if reason in inference_pb2.FinishReason.values() else "unspecified"
    return name.removeprefix("FINISH_REASON_").lower()


def compare(reference, completions, backend: str = ""):
    """A ServeCheckResult (without EOS figures) comparing the reference's samples with the
    served Completions, in order."""
    from tunesmith.api.trainer.v1 import trainer_pb2

    result = trainer_pb2.ServeCheckResult(backend=backend, prompts_compared=len(reference.samples))
    for sample, got in zip(reference.samples, completions):
        got_finish = finish_name(got.finish_reason)
        if (got.text, got.completion_tokens, got_finish) == (sample.text, len(sample.token_ids), sample.finish_reason):
            result.prompts_agreed += 1
        elif len(result.mismatches) < MAX_EXAMPLES:
            result.mismatches.add(prompt=sample.prompt, expected=sample.text, got=got.text,
                                  expected_tokens=len(sample.token_ids), got_tokens=got.completion_tokens,
                                  expected_finish=sample.finish_reason, got_finish=got_finish)
    result.agreement_rate = result.prompts_agreed / result.prompts_compared if result.prompts_compared else 0.0
    if not result.prompts_compared:
        result.warnings.append("no held-out prompt fit in the model's context: no answer was compared")
    not_stopped = sum(1 for s, g in zip(reference.samples, completions)
                      if s.finish_reason == "stop" and finish_name(g.finish_reason) != "stop")
    if not_stopped:
        result.warnings.append(f"{not_stopped} answer(s) that ended with EOS in peft did not stop when served "
                               f"(the served model's EOS token differs, or it never generates it)")
    result.eos_ok = not not_stopped
    return result


def _describe(result) -> str:
    examples = "; ".join(f"prompt {m.prompt[-60:]!r}: peft {m.expected!r} ({m.expected_tokens} tokens, "
                         f"{m.expected_finish}), served {m.got!r} ({m.got_tokens} tokens, {m.got_finish})"
                         for m in result.mismatches)
    return (f"{result.prompts_agreed} of {result.prompts_compared} greedy answers agree "
            f"(agreement rate {result.agreement_rate:.3f})" + (f"; e.g. {examples}" if examples else ""))


# --- the hand-off ---------------------------------------------------------------------------
class _Inference:
    """The inference service's stub with the waits the hand-off needs."""

    def __init__(self, address: str, control: JobControl):
        import grpc

        from tunesmith.api.inference.v1 import inference_pb2_grpc

        self.channel = grpc.insecure_channel(address)
        self.stub = inference_pb2_grpc.InferenceServiceStub(self.channel)
        self.control = control

    def get(self, name: str):
        """The ServedModel, or None when nothing is served under `name`."""
        import grpc

        from tunesmith.api.inference.v1 import inference_pb2

        try:
            return self.stub.GetServedModel(inference_pb2.GetServedModelRequest(name=name), timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def wait_ready(self, served):
        from tunesmith.api.inference.v1 import inference_pb2

        deadline = time.monotonic() + LOAD_TIMEOUT_SECONDS
        while served.state == inference_pb2.SERVED_MODEL_STATE_LOADING:
            if self.control.cancelled.is_set():
                raise JobCancelled()
            if time.monotonic() > deadline:
                raise JobFailed("serve_failed", f"{served.name!r} was still loading after {LOAD_TIMEOUT_SECONDS:.0f} s",
                                "spec.serve_as")
            time.sleep(POLL_SECONDS)
            served = self.get(served.name)
            if served is None:
                raise JobFailed("serve_failed", "the model was unloaded while it loaded", "spec.serve_as")
        if served.state != inference_pb2.SERVED_MODEL_STATE_READY:
            why = served.error.message or inference_pb2.ServedModelState.Name(served.state)
            raise JobFailed("serve_failed", f"the inference service could not load {served.name!r}: {why}",
                            "spec.serve_as")
        return served

    def close(self) -> None:
        self.channel.close()


def _load(client: _Inference, record, control: JobControl, base_uri: str) -> tuple[Any, str]:
    """Serve the job's model; (the ServedModel under serve_as, the served base's name or ""). A
    base already served under "<serve_as>-base" is reused when it serves `base_uri` with adapters."""
    from tunesmith.api.inference.v1 import inference_pb2

    spec, result = record.spec, record.result
    name, backend = spec.serve_as, spec.serve_check.backend
    if client.get(name) is not None:
        raise JobFailed("serve_name_taken", f"the inference service already serves something as {name!r}; unload "
                        f"it or choose another serve_as", "spec.serve_as")
    whole = result.merged_model.uri or result.model.uri
    if whole:
        control.log(f"serving {'the merged model' if result.merged_model.uri else 'the model'} {whole} as {name!r}")
        served = client.stub.LoadModel(inference_pb2.LoadModelRequest(name=name, model=whole, backend=backend),
                                       timeout=RPC_TIMEOUT)
        return client.wait_ready(served), ""
    base_name = name + BASE_SUFFIX
    base = client.get(base_name)
    if base is not None and (base.kind != "model" or base.artifact.uri != base_uri or not _adapters_enabled(base)):
        raise JobFailed("serve_name_taken", f"the inference service already serves {base_name!r}, but not as the base "
                        f"{base_uri} with adapters enabled; unload it or choose another serve_as", "spec.serve_as")
    if base is None:
        control.log(f"serving the base {spec.base_model!r} as {base_name!r} (adapters enabled)")
        base = client.stub.LoadModel(inference_pb2.LoadModelRequest(name=base_name, model=spec.base_model,
                                                                    backend=backend, enable_adapters=True),
                                     timeout=RPC_TIMEOUT)
    base = client.wait_ready(base)
    control.log(f"serving the adapter {result.adapter.uri} as {name!r} on {base_name!r}")
    request = inference_pb2.LoadAdapterRequest(name=name, base=base_name, adapter=result.adapter)
    if "allow_fallback" in inference_pb2.LoadAdapterRequest.DESCRIPTOR.fields_by_name:
        request.allow_fallback = not backend  # the service's choice of backend: it may fall back
    return client.stub.LoadAdapter(request, timeout=RPC_TIMEOUT), base_name


def _adapters_enabled(served) -> bool:
    """Whether a served model takes adapters (ServedModel.adapter_limits is set for those; an
    inference API without that field cannot say, and LoadAdapter then decides)."""
    if "adapter_limits" not in type(served).DESCRIPTOR.fields_by_name:
        return True
    return served.HasField("adapter_limits")


def _generate(client: _Inference, name: str, reference, control: JobControl) -> list:
    """The served model's greedy answers, one request per prompt (as the reference was made)."""
    from tunesmith.api.inference.v1 import inference_pb2

    out = []
    for sample in reference.samples:
        if control.cancelled.is_set():
            raise JobCancelled()
        response = client.stub.Generate(inference_pb2.GenerateRequest(
            model=name, prompts=[inference_pb2.Prompt(text=sample.prompt)],
            sampling=inference_pb2.SamplingParams(max_new_tokens=sample.max_new_tokens, temperature=0.0)),
            timeout=GENERATE_TIMEOUT)
        out.append(response.completions[0])
    return out


def _unload(client: _Inference, name: str, base_name: str, loaded_base: bool) -> None:
    from tunesmith.api.inference.v1 import inference_pb2

    try:
        if base_name:
            client.stub.UnloadAdapter(inference_pb2.UnloadAdapterRequest(name=name), timeout=RPC_TIMEOUT)
            if loaded_base:
                client.stub.UnloadModel(inference_pb2.UnloadModelRequest(name=base_name), timeout=RPC_TIMEOUT)
        else:
            client.stub.UnloadModel(inference_pb2.UnloadModelRequest(name=name), timeout=RPC_TIMEOUT)
    except Exception:  # noqa: BLE001 - best effort: the job fails with the check's reason either way
        pass


def skip_serving(record, control: JobControl, why: str) -> None:
    """Record that the model was not served, and why (e.g. its gate failed)."""
    record.result.serve_check.warnings.append(why)
    control.log(f"serve_as {record.spec.serve_as!r}: not served: {why}", "warning")
    control.save()


def run_handoff(record, control: JobControl, inference_address: str, storage, base_uri: str) -> None:
    """Serve the job's model and check it (see the module docstring); `base_uri` is the base
    model's artifact (also the EOS reference). Fills result.served_model, .served_base and
    .serve_check. JobFailed when it cannot be served (serve_failed, serve_name_taken,
    no_serve_reference) or, with strict, when the check fails (serve_check_failed);
    JobCancelled on cancel."""
    import grpc

    from tunesmith.core.errors import TunesmithError
    from tunesmith.core.formats.serve_reference import read_reference

    spec, result = record.spec, record.result
    output = result.adapter.uri or result.model.uri
    try:
        reference = read_reference(storage.resolve(output))
    except TunesmithError as exc:
        raise JobFailed("no_serve_reference", f"the job's output {output} holds no readable serve reference: "
                        f"{exc.message}", "spec.serve_as") from None
    client = _Inference(inference_address, control)
    try:
        base_was_served = not (result.merged_model.uri or result.model.uri) and \
            client.get(spec.serve_as + BASE_SUFFIX) is not None
        served, base_name = _load(client, record, control, base_uri)
        result.served_model, result.served_base = served.name, base_name
        control.save()
        check = compare(reference, _generate(client, served.name, reference, control), served.backend)
    except grpc.RpcError as exc:
        raise JobFailed("serve_failed", f"the inference service at {inference_address} refused the hand-off: "
                        f"{exc.code().name}: {exc.details()}", "spec.serve_as") from None
    else:
        served_dir = storage.resolve(result.merged_model.uri or result.model.uri or result.adapter.uri)
        static = eos_problems(storage.resolve(base_uri), served_dir)
        check.warnings.extend(static)
        check.eos_ok = check.eos_ok and not static
        check.passed = check.agreement_rate == 1.0 and check.eos_ok
        result.serve_check.CopyFrom(check)
        control.metrics("serve_check", {"agreement_rate": check.agreement_rate,
                                        "prompts_compared": float(check.prompts_compared),
                                        "eos_ok": float(check.eos_ok)})
        summary = _describe(check)
        if check.passed:
            control.log(f"served as {served.name!r} on {served.backend}; hand-off checked: {summary}")
            control.save()
            return
        problems = summary + ("" if check.eos_ok else "; EOS: " + "; ".join(check.warnings))
        if spec.serve_check.strict:
            _unload(client, served.name, base_name, loaded_base=not base_was_served)
            result.served_model, result.served_base = "", ""
            control.save()
            raise JobFailed("serve_check_failed", f"the served model does not answer as the trained one did "
                            f"(serve_check.strict, so it was unloaded): {problems}", "spec.serve_check.strict")
        control.log(f"served as {served.name!r} on {served.backend}, but the hand-off check FAILED: {problems}",
                    "warning")
        control.save()
    finally:
        client.close()

