"""The built-in inference backends on real models (no mocks).

- transformers: the session's tiny random Llama (tests/conftest.py `tiny_model_dir`, weights redrawn
  by `varied_model_dir`): batching
  with left padding, streaming, stop strings, finish reasons, cancellation, adapters, threads.
- vLLM (marked vllm + integration): the real bundled SmolLM2-135M-Instruct, one engine for the
  whole module (an engine start costs 30-40 s on a small CPU, more on the first compile).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time

import pytest

from tunesmith.core.contracts import AdapterLimits, Generation, Sampling
from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound

from .reference import reference_logprobs

CHAT = [{"role": "user", "content": "What is the capital of France?"}]
# Prompts of clearly different lengths, plain text and chats, so left padding matters.
PROMPTS = [
    "Hello",
    [{"role": "user", "content": "How do I change my PIN number?"}],
    "The quick brown fox jumps over the lazy dog. My card has not arrived yet and it has been two weeks.",
    [{"role": "system", "content": "Answer with the label only."},
     {"role": "user", "content": "I lost my card, please block it right away. Someone stole my wallet."}],
    "zero one two",
    "Can I top up my account with a bank transfer?",
]

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None,
    reason="torch and transformers are not installed")


def _registry():
    from tunesmith.core.plugins import PluginRegistry

    return PluginRegistry(builtins=("tunesmith_builtin.inference_transformers", "tunesmith_builtin.inference_vllm"),
                          entry_points=False)


# --- registration --------------------------------------------------------------------------
def test_both_backends_register_and_report_availability():
    reg = _registry()
    assert reg.names("inference_backends") == ["transformers", "vllm"]
    for name, backend in reg.all("inference_backends").items():
        assert backend.name == name
        ok, reason = backend.available()
        assert isinstance(ok, bool) and isinstance(reason, str) and reason
    ok, reason = reg.get("inference_backends", "vllm").available()
    assert ok == (importlib.util.find_spec("vllm") is not None), reason


def test_importing_and_probing_the_plugins_stays_light():
    """available() and module import must not pull in torch, transformers or vllm."""
    code = (
        "import sys\n"
        "import tunesmith_builtin.inference_transformers as t, tunesmith_builtin.inference_vllm as v\n"
        "t.TransformersBackend().available(); v.VllmBackend().available()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- transformers backend on the tiny model --------------------------------------------------
@pytest.fixture(scope="module")
def tiny(varied_model_dir):
    from tunesmith_builtin.inference_transformers import TransformersBackend

    # float32 everywhere (the default on CPU; on a GPU bfloat16 would be), so exact comparisons hold
    model = TransformersBackend(max_batch_size=4).load(varied_model_dir, dtype="float32")
    yield model
    model.close()


def _one_by_one(model, prompts, sampling):
    return [model.generate([p], sampling)[0] for p in prompts]


@needs_torch
def test_tiny_model_loads_float32_with_left_padding(tiny, varied_model_dir):
    assert tiny.backend == "transformers"
    assert tiny.dtype == "float32" and str(next(tiny.model.parameters()).dtype) == "torch.float32"
    assert tiny.tokenizer.padding_side == "left" and tiny.tokenizer.pad_token_id is not None
    if tiny.device == "cpu":  # the default dtype on CPU is float32 too
        from tunesmith_builtin.inference_transformers import TransformersBackend

        default = TransformersBackend().load(varied_model_dir)
        try:
            assert default.dtype == "float32"
        finally:
            default.close()
    with pytest.raises(InvalidArgument):
        from tunesmith_builtin.inference_transformers import TransformersBackend

        TransformersBackend().load(varied_model_dir, dtype="float8")


@needs_torch
def test_batched_greedy_equals_row_by_row(tiny, monkeypatch):
    from tunesmith_builtin.inference_transformers import render_prompt

    lengths = {len(render_prompt(tiny.tokenizer, p)) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS), "prompts must have different lengths to exercise padding"
    sampling = Sampling(max_new_tokens=12)
    single = _one_by_one(tiny, PROMPTS, sampling)

    calls = []
    real = tiny.model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny.model, "generate", counting)
    batched = tiny.generate(PROMPTS, sampling)
    assert sorted(calls) == [2, 4], "6 prompts with max_batch_size=4 must run as two batches"
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in single]
    assert [g.finish_reason for g in batched] == [g.finish_reason for g in single]
    assert [g.prompt_tokens for g in batched] == [len(render_prompt(tiny.tokenizer, p)) for p in PROMPTS]
    assert any(g.text.strip() for g in batched)


@needs_torch
def test_length_finish_reason_and_token_counts(tiny):
    gens = tiny.generate(PROMPTS[:3], Sampling(max_new_tokens=5))
    for g in gens:
        assert isinstance(g, Generation)
        assert g.completion_tokens == 5 and g.finish_reason == "length", g


@needs_torch
def test_stream_deltas_concatenate_to_generate_text(tiny):
    sampling = Sampling(max_new_tokens=16)
    for prompt in (PROMPTS[1], PROMPTS[2]):
        expected = tiny.generate([prompt], sampling)[0]
        stream = tiny.stream(prompt, sampling)
        deltas = list(stream)
        assert len(deltas) > 1, "a stream should yield several deltas"
        assert "".join(deltas) == expected.text
        assert stream.generation == expected


@needs_torch
def test_stop_strings_cut_generate_and_stream(tiny):
    prompt = PROMPTS[2]
    full = tiny.generate([prompt], Sampling(max_new_tokens=24))[0].text
    assert len(full) >= 12, f"need some generated text to pick a stop string from: {full!r}"
    stop = full[6:9]
    cut = full[:full.index(stop)]
    sampling = Sampling(max_new_tokens=24, stop=["never-generated-xyz", stop])
    got = tiny.generate([prompt], sampling)[0]
    assert got.text == cut and got.finish_reason == "stop"
    stream = tiny.stream(prompt, sampling)
    assert "".join(stream) == cut
    assert stream.generation.finish_reason == "stop"


@needs_torch
def test_closing_a_stream_stops_generation(tiny):
    before = tiny.stats()
    stream = tiny.stream(PROMPTS[0], Sampling(max_new_tokens=400))
    first = next(stream)
    assert first
    t0 = time.monotonic()
    stream.close()
    deadline = time.monotonic() + 10
    while tiny.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    after = tiny.stats()
    assert after["rows_cancelled"] == before["rows_cancelled"] + 1 and not after["running"]
    assert after["tokens"] - before["tokens"] < 400  # it stopped well short of its limit
    assert time.monotonic() - t0 < 10
    # the model is free again
    assert tiny.generate([PROMPTS[0]], Sampling(max_new_tokens=2))[0].completion_tokens >= 1


@needs_torch
def test_seeded_sampling_is_reproducible(tiny):
    s = Sampling(max_new_tokens=16, temperature=1.0, top_p=0.95, top_k=50, seed=1234)
    a = tiny.generate(PROMPTS[:2], s)
    b = tiny.generate(PROMPTS[:2], s)
    assert [g.text for g in a] == [g.text for g in b]


@needs_torch
def test_concurrent_callers_get_the_sequential_answers(tiny):
    sampling = Sampling(max_new_tokens=10)
    expected = tiny.generate(PROMPTS, sampling)
    results: dict[int, list[Generation]] = {}
    errors: list[BaseException] = []

    def call(i):
        try:
            results[i] = tiny.generate(PROMPTS, sampling) if i % 2 == 0 else [
                Generation("".join(tiny.stream(PROMPTS[1], sampling)), 0, 0, "")]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert [g.text for g in results[0]] == [g.text for g in expected] == [g.text for g in results[2]]
    assert results[1][0].text == results[3][0].text == expected[1].text


@needs_torch
def test_bad_requests_are_invalid_argument(tiny):
    with pytest.raises(InvalidArgument):
        tiny.generate(["hi"], Sampling(max_new_tokens=0))
    with pytest.raises(InvalidArgument):
        tiny.generate(["hi"], Sampling(temperature=-1))
    with pytest.raises(InvalidArgument):
        tiny.generate([[{"role": "user"}]], Sampling())
    with pytest.raises(InvalidArgument):
        tiny.generate(["word " * 600], Sampling())  # longer than max_position_embeddings (512)


@needs_torch
def test_transformers_adapters(varied_model_dir, tmp_path):
    pytest.importorskip("peft")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith_builtin.inference_transformers import TransformersBackend

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(varied_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    sampling = Sampling(max_new_tokens=12)

    backend = TransformersBackend()
    plain = backend.load(varied_model_dir, dtype="float32")
    try:
        with pytest.raises(FailedPrecondition, match="enable_adapters"):
            plain.load_adapter("a", str(adapter_dir))
        base_texts = [g.text for g in plain.generate(PROMPTS[:3], sampling)]
    finally:
        plain.close()

    model = backend.load(varied_model_dir, dtype="float32", enable_adapters=True)
    try:
        model.load_adapter("rnd", str(adapter_dir))
        assert model.adapters() == ["rnd"]
        with_adapter = [g.text for g in model.generate(PROMPTS[:3], sampling, adapter="rnd")]
        assert with_adapter != base_texts, "a random LoRA should change greedy output"
        assert "".join(model.stream(PROMPTS[0], sampling, adapter="rnd")) == with_adapter[0]
        assert [g.text for g in model.generate(PROMPTS[:3], sampling)] == base_texts, "no adapter = the base"
        with pytest.raises(NotFound):
            model.generate(PROMPTS[:1], sampling, adapter="other")
        model.unload_adapter("rnd")
        with pytest.raises(NotFound):
            model.generate(PROMPTS[:1], sampling, adapter="rnd")
        assert [g.text for g in model.generate(PROMPTS[:3], sampling)] == base_texts
    finally:
        model.close()
    with pytest.raises(FailedPrecondition):
        model.generate(PROMPTS[:1], sampling)


# --- vLLM on the real bundled model ------------------------------------------------------------
vllm_marks = [pytest.mark.vllm, pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")]


@pytest.fixture(scope="module")
def smol_lora_dir(bundled_model_dir, tmp_path_factory):
    """A random (init_lora_weights=False) LoRA on the bundled model: it changes greedy output."""
    pytest.importorskip("peft")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(bundled_model_dir)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    out = tmp_path_factory.mktemp("smol-lora") / "adapter"
    model.save_pretrained(str(out))
    del model, base
    return str(out)


@pytest.fixture(scope="module")
def smol_vllm(bundled_model_dir):
    """The one vLLM engine of this module (LoRA enabled so the adapter test can share it)."""
    from tunesmith_builtin.inference_vllm import VllmBackend

    t0 = time.monotonic()
    model = VllmBackend().load(bundled_model_dir, max_model_len=1024, enable_adapters=True,
                               adapter_limits=AdapterLimits(max_adapters=2, max_rank=16))
    sys.stderr.write(f"\nvLLM engine start: {time.monotonic() - t0:.1f} s\n")
    yield model
    model.close()


def _vllm(test):
    """Mark a test as vllm + integration, skipped where vLLM is not installed."""
    for mark in vllm_marks:
        test = mark(test)
    return test


@_vllm
def test_vllm_greedy_chat_answer_is_paris(smol_vllm):
    assert smol_vllm.backend == "vllm"
    assert smol_vllm.dtype == "float32"
    gen = smol_vllm.generate([CHAT], Sampling(max_new_tokens=24))[0]
    assert "Paris" in gen.text, gen
    assert gen.finish_reason == "stop" and 0 < gen.completion_tokens < 24
    assert gen.prompt_tokens > 10


@_vllm
def test_vllm_stream_deltas_concatenate_to_the_full_text(smol_vllm):
    sampling = Sampling(max_new_tokens=24)
    full = smol_vllm.generate([CHAT], sampling)[0]
    stream = smol_vllm.stream(CHAT, sampling)
    deltas = list(stream)
    assert len(deltas) > 2
    assert "".join(deltas) == full.text
    assert stream.generation == full


@_vllm
def test_vllm_two_threads_generate_concurrently(smol_vllm):
    prompts = [[{"role": "user", "content": f"Name a fruit that is {c}."}] for c in ("red", "yellow", "green")]
    sampling = Sampling(max_new_tokens=16)
    results: dict[int, list[Generation]] = {}
    errors: list[BaseException] = []

    def call(i):
        try:
            results[i] = smol_vllm.generate(prompts if i == 0 else [CHAT], sampling)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert len(results[0]) == 3 and all(g.text and g.completion_tokens > 0 for g in results[0])
    assert "Paris" in results[1][0].text
    # a batch gives the same greedy answers as one prompt at a time
    assert results[0][1].text == smol_vllm.generate([prompts[1]], sampling)[0].text


@_vllm
def test_vllm_stop_length_and_cancel(smol_vllm):
    got = smol_vllm.generate([CHAT], Sampling(max_new_tokens=24, stop=["Paris"]))[0]
    assert got.finish_reason == "stop" and "Paris" not in got.text and got.text.startswith("The capital")
    got = smol_vllm.generate(["Once upon a time"], Sampling(max_new_tokens=6))[0]
    assert got.finish_reason == "length" and got.completion_tokens == 6

    story = [{"role": "user", "content": "Write a very long story about a dragon."}]
    stream = smol_vllm.stream(story, Sampling(max_new_tokens=900))
    assert next(stream)
    stream.close()
    deadline = time.monotonic() + 10
    while smol_vllm._engine.get_num_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert smol_vllm._engine.get_num_unfinished_requests() == 0, "closing the stream must abort the request"


@_vllm
def test_vllm_lora_adapter(smol_vllm, smol_lora_dir):
    prompts = [[{"role": "user", "content": f"Tell me a fact about the number {i}."}] for i in range(2)]
    sampling = Sampling(max_new_tokens=20)
    base = [g.text for g in smol_vllm.generate(prompts, sampling)]
    smol_vllm.load_adapter("rnd", smol_lora_dir)
    try:
        tuned = [g.text for g in smol_vllm.generate(prompts, sampling, adapter="rnd")]
        assert tuned != base, "the random LoRA should change greedy output"
        assert "".join(smol_vllm.stream(prompts[0], sampling, adapter="rnd")) == tuned[0]
        assert [g.text for g in smol_vllm.generate(prompts, sampling)] == base
    finally:
        smol_vllm.unload_adapter("rnd")
    with pytest.raises(NotFound):
        smol_vllm.generate(prompts, sampling, adapter="rnd")


def _live_children() -> set[int]:
    """Pids of this process's children that are still running (not zombies)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                out.add(int(entry))
    return out


@_vllm
def test_vllm_logprobs_match_a_transformers_forward_pass(smol_vllm, bundled_model_dir):
    from tunesmith_builtin.inference_transformers import render_prompt

    sampling = Sampling(max_new_tokens=12, logprobs=3)
    gen = smol_vllm.generate([CHAT], sampling)[0]
    assert gen.logprobs is not None and len(gen.logprobs) == gen.completion_tokens
    assert "".join(t.token for t in gen.logprobs).startswith(gen.text[:5])
    chosen, best = reference_logprobs(bundled_model_dir, render_prompt(smol_vllm.tokenizer, CHAT),
                                      [t.token_id for t in gen.logprobs], 3)
    for t, ref, ref_top in zip(gen.logprobs, chosen, best):
        assert t.logprob == pytest.approx(ref, abs=2e-3), (t, ref)
        assert [tid for _, _, tid in t.top] == ref_top  # greedy: the chosen token is the top one
        assert t.top[0][2] == t.token_id
    stream = smol_vllm.stream(CHAT, sampling)
    assert "".join(stream) == gen.text
    assert [t.token_id for t in stream.logprobs] == [t.token_id for t in gen.logprobs]
    assert stream.generation.logprobs == stream.logprobs


@_vllm
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to list child processes")
def test_vllm_close_cancels_requests_and_stops_the_engine(smol_vllm):
    """Runs last in this module: it closes the shared engine (the fixture's close is idempotent)."""
    with pytest.raises(InvalidArgument):
        smol_vllm.generate(["word " * 1100], Sampling())  # longer than max_model_len=1024
    before = _live_children()
    story = [{"role": "user", "content": "Write a very long story about a dragon."}]
    stream = smol_vllm.stream(story, Sampling(max_new_tokens=600))
    assert next(stream)
    outcome: dict[str, object] = {}

    def long_generate():
        try:
            outcome["result"] = smol_vllm.generate([story, story], Sampling(max_new_tokens=600))
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=long_generate)
    worker.start()
    time.sleep(1.0)
    smol_vllm.close()
    worker.join(60)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), FailedPrecondition), outcome
    list(stream)
    assert stream.generation is not None and stream.generation.finish_reason == "cancelled"
    with pytest.raises(FailedPrecondition):
        smol_vllm.generate([CHAT], Sampling(max_new_tokens=4))
    assert not [t for t in threading.enumerate() if t.name == "tunesmith-vllm-loop"]
    gone = before - _live_children()
    assert gone, "the engine's processes should have exited"
