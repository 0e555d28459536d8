"""Log-likelihoods: the inference backends' loglikelihood(), the "perplexity" and
"mc_loglikelihood" benchmarks and the bundled suites, checked against hand computations with
the model's logits, against peft's own forward pass and against lm-evaluation-harness itself.

- (a) transformers backend on a tiny Llama (weights redrawn so that choices differ), base,
  LoRA, prompt tuning and prefix tuning;
- (b) lm-evaluation-harness 0.4 offline (HFLM on the same tiny model): per-request
  log-likelihoods of tricky pairs, and a multiple-choice task defined from a local YAML whose
  acc / acc_norm must equal mc_loglikelihood's;
- (c) vLLM on the bundled model against the transformers backend (vllm + integration).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil

import pytest
from tunesmith.core.contracts import Benchmark, EvalRow, LogLikelihood
from tunesmith.core.errors import InvalidArgument, NotFound
from tunesmith.testing.contracts import check_conforms

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytest.importorskip("torch")
pytest.importorskip("transformers")

# (context, continuation): a prompt ending in ":", a context ending in a space (moved to the
# continuation), an empty context (BOS/EOS prefix), a whitespace-only context, one-token pieces,
# newlines, and text that starts with the BOS token's text.
PAIRS = [
    ("Question: What is the capital of France?\nAnswer:", " Paris"),
    ("My card has not arrived ", "yet, when will it come?"),
    ("", "The quick brown fox jumps over the lazy dog."),
    ("   ", "hello there"),
    ("a", " b"),
    ("Classify this message.\nMessage: I lost my card\nIntent:", " lost_or_stolen_card"),
    ("Line one\n", "\nLine two"),
    ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "Hello!"),
]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The session's tiny Llama with matrices redrawn at std 0.2: the stock init gives nearly
    uniform next-token distributions, under which every choice scores about the same."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("ll-model") / "tiny-llama-varied"
    shutil.copytree(tiny_model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    model.save_pretrained(str(out))
    return str(out)


@pytest.fixture(scope="module")
def tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def loaded(model_dir):
    from tunesmith_builtin.inference_transformers import TransformersBackend

    model = TransformersBackend(max_batch_size=3).load(model_dir, enable_adapters=True)
    yield model
    model.close()


def by_hand_tokens(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's rule written out for this tokenizer (it adds no special tokens of its own)."""
    if context == "":
        return [tok.bos_token_id], tok.encode(continuation, add_special_tokens=False)
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    if not stripped:
        return [tok.bos_token_id], tok.encode(continuation)
    plain = stripped.startswith(tok.bos_token)
    enc = (lambda s: tok.encode(s, add_special_tokens=False)) if plain else tok.encode
    ctx = enc(stripped)
    return ctx, enc(stripped + continuation)[len(ctx):]


def by_hand(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """Sum of log_softmax(logits)[next token] over the continuation, from one unpadded forward
    pass; the last len(input) output positions (prompt tuning puts its virtual tokens first)."""
    import torch

    ids = torch.tensor([ctx + cont][0][:-1]).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -ids.shape[1]:]
    scores = torch.log_softmax(logits[-len(cont):].float(), dim=-1)
    target = torch.tensor(cont)
    return float(scores.gather(1, target[:, None]).sum()), bool((scores.argmax(-1) == target).all())


def hf_model(model_dir, adapter_dir=None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).eval()
    return model


def expected(model, tok, pairs) -> list[tuple[float, bool, int]]:
    out = []
    for c, k in pairs:
        ctx, cont = by_hand_tokens(tok, c, k)
        lp, greedy = by_hand(model, ctx, cont)
        out.append((lp, greedy, len(cont)))
    return out


def assert_matches(got: list[LogLikelihood], want, atol=1e-4):
    assert len(got) == len(want)
    for g, (lp, greedy, n) in zip(got, want):
        assert g.tokens == n
        assert g.logprob == pytest.approx(lp, abs=atol), (g, lp)
        assert g.is_greedy == greedy


# --- (a) the transformers backend -------------------------------------------------------------
def test_tokenisation_follows_lm_eval(tok):
    from tunesmith_builtin.inference_transformers import encode_loglikelihood_request

    for c, k in PAIRS:
        assert encode_loglikelihood_request(tok, c, k) == by_hand_tokens(tok, c, k), (c, k)
    _, cont = encode_loglikelihood_request(tok, "My card ", "yet")
    assert tok.decode(cont).startswith(" ")  # the context's trailing space moved to the continuation
    with pytest.raises(InvalidArgument) as info:
        encode_loglikelihood_request(tok, "context", "")
    assert info.value.field == "continuation"


def test_loglikelihood_equals_a_hand_computation_with_the_logits(loaded, model_dir, tok):
    base = hf_model(model_dir)
    want = expected(base, tok, PAIRS)
    got = loaded.loglikelihood(PAIRS)  # batches of 3, right-padded, sorted by length
    assert_matches(got, want)
    assert all(g.logprob < 0 for g in got)
    # batching does not change a result: one request at a time gives the same numbers
    for pair, g in zip(PAIRS, got):
        assert loaded.loglikelihood([pair])[0].logprob == pytest.approx(g.logprob, abs=1e-5)
    assert loaded.loglikelihood([]) == []


def test_greedy_continuations_are_flagged(loaded, model_dir, tok):
    import torch

    base = hf_model(model_dir)
    context = "Question: What is the capital of France?\nAnswer:"
    ids = tok.encode(context)
    with torch.no_grad():
        out = base.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    greedy_text = tok.decode(out[0, len(ids):])
    _, cont = by_hand_tokens(tok, context, greedy_text)
    if cont != out[0, len(ids):].tolist():
        pytest.skip("the greedy tokens do not re-encode to themselves with this tokenizer")
    assert loaded.loglikelihood([(context, greedy_text)])[0].is_greedy


def test_long_inputs_are_cut_on_the_left_and_bad_requests_refused(model_dir, tok):
    from tunesmith_builtin.inference_transformers import TransformersBackend

    base = hf_model(model_dir)
    model = TransformersBackend().load(model_dir, max_model_len=16)
    try:
        context = " ".join(["card arrival lost stolen"] * 10)
        ctx, cont = by_hand_tokens(tok, context, " exchange rate")
        assert len(ctx) + len(cont) > 17
        keep = (ctx + cont)[-17:]  # lm-eval: the last max_length + 1 tokens, the final one not fed
        got = model.loglikelihood([(context, " exchange rate")])[0]
        assert got.logprob == pytest.approx(by_hand(base, keep[:-len(cont)], cont)[0], abs=1e-4)
        with pytest.raises(InvalidArgument) as info:
            model.loglikelihood([("a", " ".join(["exchange rate"] * 20))])
        assert info.value.field == "continuation"
        with pytest.raises(InvalidArgument):
            model.loglikelihood([("a", "")])
        with pytest.raises(NotFound):
            model.loglikelihood([("a", "b")], adapter="nope")
    finally:
        model.close()


def test_a_lora_adapter_changes_the_result_and_equals_peft(loaded, model_dir, tok, tmp_path):
    pytest.importorskip("peft")
    from tunesmith.testing.contracts import tiny_lora_adapter

    adapter = tiny_lora_adapter(model_dir, tmp_path / "lora")
    loaded.load_adapter("my.lora", adapter)
    try:
        got = loaded.loglikelihood(PAIRS, adapter="my.lora")
        assert_matches(got, expected(hf_model(model_dir, adapter), tok, PAIRS), atol=2e-4)
        base = loaded.loglikelihood(PAIRS)
        assert_matches(base, expected(hf_model(model_dir), tok, PAIRS))
        assert all(abs(a.logprob - b.logprob) > 1e-3 for a, b in zip(got, base))
    finally:
        loaded.unload_adapter("my.lora")


@pytest.mark.parametrize("kind", ["prompt_tuning", "prefix_tuning"])
def test_prompt_learning_adapters_equal_peft(model_dir, tok, tmp_path, kind):
    pytest.importorskip("peft")
    import torch
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model
    from tunesmith_builtin.inference_transformers import TransformersBackend

    torch.manual_seed(0)
    config = (PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5) if kind == "prompt_tuning"
              else PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    peft_model = get_peft_model(hf_model(model_dir), config)
    peft_model.save_pretrained(str(tmp_path / kind))
    model = TransformersBackend(max_batch_size=4).load(model_dir, enable_adapters=True)
    try:
        model.load_adapter("pl", str(tmp_path / kind))
        got = model.loglikelihood(PAIRS, adapter="pl")
        want = expected(hf_model(model_dir, str(tmp_path / kind)), tok, PAIRS)
        assert_matches(got, want, atol=2e-4)
        base = model.loglikelihood(PAIRS)  # the adapter switched off: the base weights again
        assert_matches(base, expected(hf_model(model_dir), tok, PAIRS))
        assert any(abs(a.logprob - b.logprob) > 1e-3 for a, b in zip(got, base))
    finally:
        model.close()


# --- the benchmarks ---------------------------------------------------------------------------
def ll(lp: float, n: int = 1) -> LogLikelihood:
    return LogLikelihood(logprob=lp, tokens=n, is_greedy=False)


def test_the_benchmarks_are_registered_and_keep_the_protocol():
    from tunesmith.core.plugins import PluginRegistry

    reg = PluginRegistry(builtins=("tunesmith_builtin.bench_perplexity", "tunesmith_builtin.bench_mc_loglikelihood"),
                         entry_points=False)
    ppl, mc = reg.get("benchmarks", "perplexity"), reg.get("benchmarks", "mc_loglikelihood")
    for b in (ppl, mc):
        check_conforms(b, Benchmark)
        assert b.needs == "loglikelihood"
        b.validate_options({})
        with pytest.raises(InvalidArgument) as info:
            b.validate_options({"no_such_option": 1})
        assert info.value.field == "no_such_option"
    assert mc.requires == frozenset({"choices"}) and ppl.requires == frozenset()
    assert [(m.name, m.statistic, m.higher_is_better) for m in ppl.metrics] == [
        ("perplexity", "corpus", False), ("mean_logprob_per_token", "corpus", True)]
    assert [(m.name, m.statistic) for m in mc.metrics] == [("acc", "binary"), ("acc_norm", "binary")]
    with pytest.raises(InvalidArgument) as info:
        mc.validate_options({"target_delimiter": 1})
    assert info.value.field == "target_delimiter"


def test_perplexity_requests_and_corpus_metrics():
    from tunesmith_builtin.bench_perplexity import Perplexity

    b = Perplexity()
    assert b.requests(EvalRow(prompt="Intent:", reference="card_arrival"), {}) == [("Intent:", " card_arrival")]
    assert b.requests(EvalRow(prompt="### Response:\n", reference="Paris"), {}) == [("### Response:\n", "Paris")]
    assert b.requests(EvalRow(prompt="", reference="Some text."), {}) == [("", "Some text.")]
    assert b.requests(EvalRow(prompt="Intent:", reference="x"), {"continuation_prefix": ""}) == [("Intent:", "x")]
    rows = [EvalRow(prompt="p", reference="r", loglikelihoods=(ll(-2.0, 2),)),
            EvalRow(prompt="p", reference="r", loglikelihoods=(ll(-6.0, 2),))]
    stats = b.score_rows(rows, {})
    assert stats == [{"logprob": -2.0, "tokens": 2}, {"logprob": -6.0, "tokens": 2}]
    agg = b.aggregate(stats, {})
    assert agg["mean_logprob_per_token"] == pytest.approx(-2.0)
    assert agg["perplexity"] == pytest.approx(math.exp(2.0))
    assert b.aggregate(stats[:1] * 3, {})["perplexity"] == pytest.approx(math.exp(1.0))  # resampled rows
    assert b.aggregate([], {}) == {"perplexity": math.inf, "mean_logprob_per_token": -math.inf}
    json.dumps(stats)


def test_mc_acc_and_acc_norm_as_lm_eval_computes_them():
    from tunesmith_builtin.bench_mc_loglikelihood import MultipleChoiceLogLikelihood

    b = MultipleChoiceLogLikelihood()
    row = EvalRow(prompt="Question: q\nAnswer:", reference="bb", choices=("a", "bbbbbbbb", "cc"), gold=1)
    assert b.requests(row, {}) == [(row.prompt, " a"), (row.prompt, " bbbbbbbb"), (row.prompt, " cc")]
    assert b.requests(row, {"target_delimiter": ""})[0] == (row.prompt, "a")
    # summed logprob favours "a"; per character (the delimiter not counted) favours "bbbbbbbb"
    scored = EvalRow(**{**row.__dict__, "loglikelihoods": (ll(-3.0), ll(-8.0), ll(-7.0))})
    (s,) = b.score_rows([scored], {})
    assert (s["acc"], s["acc_norm"], s["pred"], s["pred_norm"]) == (0.0, 1.0, 0, 1)  # -3/1 < -8/8 > -7/2
    # ties go to the first, as numpy.argmax
    tie = EvalRow(prompt="p", reference="aa", choices=("aa", "bb", "cc"), gold=0,
                  loglikelihoods=(ll(-2.0), ll(-2.0), ll(-9.0)))
    assert (b.score_rows([tie], {})[0]["pred"], b.score_rows([tie], {})[0]["pred_norm"]) == (0, 0)
    late = EvalRow(**{**tie.__dict__, "gold": 1})
    assert b.score_rows([late], {})[0]["acc"] == b.score_rows([late], {})[0]["acc_norm"] == 0.0
    stats = b.score_rows([scored, tie], {})
    assert b.aggregate(stats, {}) == {"acc": 0.5, "acc_norm": 1.0}
    assert b.aggregate([], {}) == {"acc": 0.0, "acc_norm": 0.0}
    with pytest.raises(ValueError):
        b.score_rows([EvalRow(**{**row.__dict__, "loglikelihoods": (ll(-1.0),)})], {})
    json.dumps(stats)


# --- the bundled suites ---------------------------------------------------------------------------
def test_the_bundled_suites_load_as_package_data():
    from tunesmith.evaluator.suites import SUITE_NAMES, Suite, load_suite

    assert SUITE_NAMES == ("general_mc", "general_text")
    try:
        from tunesmith.core.gates import SUITE_NAMES as GATE_SUITES
    except ImportError:
        GATE_SUITES = SUITE_NAMES
    assert GATE_SUITES == SUITE_NAMES
    mc, text = load_suite("general_mc"), load_suite("general_text")
    assert isinstance(mc, Suite) and (mc.benchmark, text.benchmark) == ("mc_loglikelihood", "perplexity")
    assert len(mc.rows) == 60 and len(text.rows) == 100
    assert mc.licence == "Apache-2.0" and text.licence.startswith("MIT")
    for r in mc.rows:
        assert len(r.choices) == 4 and len(set(r.choices)) == 4 and r.reference == r.choices[r.gold]
        assert r.prompt.startswith("Question: ") and r.prompt.endswith("\nAnswer:")
    assert sorted(sum(r.gold == i for r in mc.rows) for i in range(4)) == [15, 15, 15, 15]
    assert len({r.prompt for r in mc.rows}) == 60
    for r in text.rows:
        assert r.prompt.startswith("Question: ") and r.prompt.endswith("\nAnswer:") and r.reference
        assert "<<" not in r.reference and "####" in r.reference
    with pytest.raises(NotFound) as info:
        load_suite("general_trivia")
    assert info.value.field == "suite"
    from importlib import resources

    folder = resources.files("tunesmith.evaluator.suites")
    assert "MIT License" in folder.joinpath("LICENSE-gsm8k").read_text(encoding="utf-8")
    assert "wrote these questions" in folder.joinpath("README.md").read_text(encoding="utf-8")


# --- (b) lm-evaluation-harness, offline ------------------------------------------------------------
lm_eval_needed = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed")


@pytest.fixture(scope="module")
def bos_model_dir(model_dir, tmp_path_factory) -> str:
    """The same model with a tokenizer that adds BOS to every text (as Llama-2/3 tokenizers do)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("ll-bos-model") / "tiny-llama-bos"
    shutil.copytree(model_dir, out)
    tok = AutoTokenizer.from_pretrained(model_dir)
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{tok.bos_token} $A", pair=f"{tok.bos_token} $A $B",
                                                       special_tokens=[(tok.bos_token, bos)])
    tok.save_pretrained(str(out))
    assert AutoTokenizer.from_pretrained(str(out)).encode("hi")[0] == bos
    return str(out)


@lm_eval_needed
@pytest.mark.parametrize("tokenizer", ["no_bos", "adds_bos"])
def test_per_request_loglikelihoods_equal_lm_evals_hflm(model_dir, bos_model_dir, tokenizer):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from tunesmith_builtin.inference_transformers import TransformersBackend

    folder = model_dir if tokenizer == "no_bos" else bos_model_dir
    # lm-eval asserts on a context that is only whitespace when the tokenizer adds nothing to ""
    pairs = [p for p in PAIRS if tokenizer == "adds_bos" or p[0] == "" or p[0].strip()]
    lm = HFLM(pretrained=folder, device="cpu", batch_size=2, dtype="float32")
    theirs = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)],
                              disable_tqdm=True)
    model = TransformersBackend(max_batch_size=3).load(folder)
    try:
        ours = model.loglikelihood(pairs)
    finally:
        model.close()
    assert len(ours) == len(theirs) == len(pairs)
    for pair, (lp, greedy), got in zip(pairs, theirs, ours):
        assert got.logprob == pytest.approx(lp, abs=1e-4), pair
        assert got.is_greedy == greedy, pair


TASK_YAML = """\
task: tunesmith_general_mc_check
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


@lm_eval_needed
def test_mc_loglikelihood_equals_lm_eval_on_a_multiple_choice_task(loaded, model_dir, tmp_path):
    pytest.importorskip("datasets")
    import lm_eval
    from lm_eval.tasks import TaskManager
    from tunesmith.evaluator.suites import load_suite
    from tunesmith_builtin.bench_mc_loglikelihood import MultipleChoiceLogLikelihood

    n = 12
    from importlib import resources

    text = resources.files("tunesmith.evaluator.suites").joinpath("general_mc.jsonl").read_text(encoding="utf-8")
    items = [json.loads(line) for line in text.splitlines()[:n]]
    data = tmp_path / "general_mc_check.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in items), encoding="utf-8")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "general_mc_check.yaml").write_text(TASK_YAML.format(data=data, cache=tmp_path / "hf-cache"),
                                                 encoding="utf-8")
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["tunesmith_general_mc_check"],
        task_manager=TaskManager(include_path=str(tasks)), device="cpu", batch_size=4, log_samples=True,
        num_fewshot=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    theirs = results["results"]["tunesmith_general_mc_check"]

    bench = MultipleChoiceLogLikelihood()
    rows = list(load_suite("general_mc").rows[:n])
    requests = [bench.requests(r, {}) for r in rows]
    flat = loaded.loglikelihood([q for reqs in requests for q in reqs])
    scored, i = [], 0
    for row, reqs in zip(rows, requests):
        scored.append(EvalRow(**{**row.__dict__, "loglikelihoods": tuple(flat[i:i + len(reqs)])}))
        i += len(reqs)
    stats = bench.score_rows(scored, {})
    ours = bench.aggregate(stats, {})
    assert ours["acc"] == pytest.approx(theirs["acc,none"])
    assert ours["acc_norm"] == pytest.approx(theirs["acc_norm,none"])

    samples = sorted(results["samples"]["tunesmith_general_mc_check"], key=lambda s: s["doc_id"])
    assert len(samples) == n
    for s, row_stats in zip(samples, stats):
        lls = [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in s["resps"]]
        assert row_stats["logprobs"] == pytest.approx(lls, abs=1e-4)
        assert (s["acc"], s["acc_norm"]) == (row_stats["acc"], row_stats["acc_norm"])


# --- (c) vLLM on the bundled model -----------------------------------------------------------------
@pytest.mark.vllm
@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_loglikelihood_equals_the_transformers_backend(bundled_model_dir):
    from tunesmith.core.errors import FailedPrecondition, Unavailable
    from tunesmith.evaluator.suites import load_suite
    from tunesmith_builtin.bench_mc_loglikelihood import MultipleChoiceLogLikelihood
    from tunesmith_builtin.inference_transformers import TransformersBackend
    from tunesmith_builtin.inference_vllm import VllmBackend

    bench = MultipleChoiceLogLikelihood()
    pairs = list(PAIRS) + [q for r in load_suite("general_mc").rows[:4] for q in bench.requests(r, {})]
    text = load_suite("general_text").rows[0]
    pairs.append((text.prompt, " " + text.reference))
    hf = TransformersBackend().load(bundled_model_dir, max_model_len=1024)
    try:
        want = hf.loglikelihood(pairs)
    finally:
        hf.close()
    try:
        vm = VllmBackend().load(bundled_model_dir, max_model_len=1024)
    except (FailedPrecondition, Unavailable) as exc:
        pytest.skip(f"vLLM could not start here: {exc}")
    try:
        got = vm.loglikelihood(pairs)
        with pytest.raises(InvalidArgument):
            vm.loglikelihood([("a", "")])
    finally:
        vm.close()
    assert [g.tokens for g in got] == [w.tokens for w in want]
    for pair, g, w in zip(pairs, got, want):
        assert g.logprob == pytest.approx(w.logprob, abs=1e-2 * max(1, w.tokens / 10)), pair
    agree = sum(g.is_greedy == w.is_greedy for g, w in zip(got, want))
    assert agree >= len(pairs) - 1
