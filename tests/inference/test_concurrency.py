"""Many clients at once on the transformers backend's batching queue (no mocks).

A real inference service (gRPC and the OpenAI-compatible HTTP API in one process, started by
start_service) serves the session's tiny varied Llama; clients are real gRPC stubs and the
official `openai` client. Outputs are compared with sequential greedy outputs computed first,
one request at a time; batching and cancellation are observed through TransformersModel.stats().

Rows queue up behind a "blocker": a long stream (max_model_len is raised to 2048 so it can run
~1900 tokens, seconds on this model) that keeps the worker busy while the other requests
arrive; cancelling it lets them all start together as one batch, so the tests know which rows
share a batch without depending on timing.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from tunesmith.core.contracts import Sampling  # noqa: E402

from .serving import inference_service  # noqa: E402

MAX_MODEL_LEN = 2048
LONG = 1900  # max_new_tokens of a blocker: it runs until it is cancelled
N_TOKENS = 16
_WORDS = ("card transfer fee balance top up PIN account refund cash ATM virtual payment declined "
          "currency statement deposit limit dispute wallet").split()
# Prompts of many lengths (left padding matters), each its own greedy text.
PROMPTS = [f"Customer {i}: " + " ".join(_WORDS[(i * 7 + j) % len(_WORDS)] for j in range(1 + i % 13))
           for i in range(64)]
BLOCKER = "Tell me a long story about a bank"


def _chat(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[i]}]


def _wait_for(what: str, check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# --- the service -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(varied_model_dir, tmp_path_factory):
    from tunesmith.api.common.v1 import common_pb2

    # float32 on any device, so exact comparisons hold
    with inference_service(str(tmp_path_factory.mktemp("concurrency-storage")), {"tiny": varied_model_dir},
                           load={"name": "tiny", "model": "tiny", "backend": "transformers",
                                 "max_model_len": MAX_MODEL_LEN, "dtype": common_pb2.DTYPE_FLOAT32}) as svc:
        servicer = svc["servicer"]
        model = servicer.served["tiny"][1]
        assert model.backend == "transformers" and model.dtype == "float32"
        yield {"stub": svc["stub"], "http": svc["http"] + "/v1", "servicer": servicer, "model": model}


@pytest.fixture(scope="module")
def client(service):
    return openai.OpenAI(base_url=service["http"], api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def sequential(service):
    """Greedy outputs of every prompt (as text and as a chat), one gRPC Generate at a time."""
    out = {}
    for i in range(len(PROMPTS)):
        for kind in ("text", "chat"):
            out[kind, i] = _grpc_generate(service, _prompt(kind, i), N_TOKENS)
    assert len({c.text for c in out.values()}) > len(PROMPTS), "the prompts should get different answers"
    return out


def _prompt(kind: str, i: int):
    from tunesmith.api.inference.v1 import inference_pb2

    if kind == "text":
        return inference_pb2.Prompt(text=PROMPTS[i])
    return inference_pb2.Prompt(chat=inference_pb2.Conversation(messages=[
        inference_pb2.ChatMessage(role=inference_pb2.CHAT_ROLE_USER, content=PROMPTS[i])]))


def _request(prompt, max_new_tokens: int):
    from tunesmith.api.inference.v1 import inference_pb2

    return inference_pb2.GenerateRequest(model="tiny", prompts=[prompt],
                                         sampling=inference_pb2.SamplingParams(max_new_tokens=max_new_tokens))


def _grpc_generate(service, prompt, max_new_tokens: int):
    return service["stub"].Generate(_request(prompt, max_new_tokens), timeout=60).completions[0]


def _grpc_stream(service, prompt, max_new_tokens: int) -> tuple[str, int, int]:
    """(text, completion_tokens, finish_reason) of a GenerateStream read to its end."""
    chunks = list(service["stub"].GenerateStream(_request(prompt, max_new_tokens), timeout=60))
    return "".join(c.delta for c in chunks), chunks[-1].completion_tokens, chunks[-1].finish_reason


def _http_completion_stream(client, i: int, max_tokens: int) -> tuple[str, int]:
    chunks = list(client.completions.create(model="tiny", prompt=PROMPTS[i], max_tokens=max_tokens, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    return "".join(c.choices[0].text for c in chunks if c.choices), chunks[-1].usage.completion_tokens


def _http_chat_stream(client, i: int, max_tokens: int) -> str:
    chunks = list(client.chat.completions.create(model="tiny", messages=_chat(i), max_tokens=max_tokens,
                                                 temperature=0, stream=True))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _idle(service) -> None:
    """No request holds a queue slot (an HTTP stream gives its slot back when its body ends)."""
    _wait_for("every queue slot to be free", lambda: service["servicer"].in_flight == 0)


# --- 64 clients at once ------------------------------------------------------------------------
def test_64_concurrent_mixed_streams_are_batched_and_equal_sequential_greedy(service, client, sequential):
    """16 each of gRPC GenerateStream, gRPC Generate, HTTP streaming completions and HTTP
    streaming chat, all at once (max_queue is 64: they all fit): no errors, every answer equals
    its sequential greedy answer, and the engine ran them in batches, not one by one."""
    model, servicer = service["model"], service["servicer"]
    assert servicer.max_queue >= 64
    _idle(service)
    before = model.stats()
    barrier = threading.Barrier(64)

    def call(n: int):
        i, kind = n, n % 4
        barrier.wait(30)
        if kind == 0:
            text, tokens, reason = _grpc_stream(service, _prompt("text", i), N_TOKENS)
            return "text", i, text, tokens, reason
        if kind == 1:
            c = _grpc_generate(service, _prompt("text", i), N_TOKENS)
            return "text", i, c.text, c.completion_tokens, c.finish_reason
        if kind == 2:
            text, tokens = _http_completion_stream(client, i, N_TOKENS)
            return "text", i, text, tokens, None
        return "chat", i, _http_chat_stream(client, i, N_TOKENS), None, None

    with ThreadPoolExecutor(64) as pool:
        futures = [pool.submit(call, n) for n in range(64)]
        outcomes = [f.exception(120) or f.result() for f in futures]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert not errors, errors[:3]
    for kind, i, text, tokens, reason in outcomes:
        expected = sequential[kind, i]
        assert text == expected.text, (kind, i)
        if tokens is not None:
            assert tokens == expected.completion_tokens, (kind, i)
        if reason is not None:
            assert reason == expected.finish_reason, (kind, i)
    after = model.stats()
    assert after["requests"] - before["requests"] == 64 and after["rows"] - before["rows"] == 64
    batches = after["batches"] - before["batches"]
    assert batches < 64 and after["max_batch_rows"] > 1, f"64 requests ran in {batches} batches: {after}"
    assert after["rows_cancelled"] == before["rows_cancelled"]
    _idle(service)


# --- cancellation --------------------------------------------------------------------------------
def _behind_a_grpc_blocker(service, calls, rows: int):
    """Start `calls` (functions of no argument, on threads) while a long gRPC stream keeps the
    worker busy; once their `rows` rows are queued, cancel the stream after checking that its
    row stops, so they all start together as one batch. Returns the calls' futures and pool."""
    from tunesmith.api.inference.v1 import inference_pb2

    model = service["model"]
    base = model.stats()
    blocker = service["stub"].GenerateStream(_request(inference_pb2.Prompt(text=BLOCKER), LONG), timeout=60)
    assert next(blocker).delta
    pool = ThreadPoolExecutor(len(calls))
    futures = [pool.submit(c) for c in calls]
    _wait_for(f"{rows} rows queued behind the blocker", lambda: model.stats()["queued"] == rows)
    assert model.stats()["rows_cancelled"] == base["rows_cancelled"], "the blocker ended before the test"
    blocker.cancel()  # a gRPC client that cancels its stream: its row stops within a token or so
    _wait_for("the cancelled gRPC stream's row to stop",
              lambda: model.stats()["rows_cancelled"] == base["rows_cancelled"] + 1)
    assert model.stats()["cancelled_tokens"] - base["cancelled_tokens"] < LONG
    return pool, futures


def _check_cancelled_mid_batch(service, sequential, base, futures, pool, first_chunk, cancel):
    """The victim's batch started with all five queued rows; after `cancel` its row stops within
    a few seconds, long before its max_new_tokens, and the others get their sequential answers."""
    model = service["model"]
    try:
        assert first_chunk()
        stats = model.stats()
        assert stats["batches"] == base["batches"] + 2 and stats["last_batch_rows"] == 5, stats
        cancel()
        after = _wait_for("the victim's row to stop", lambda: (
            s if (s := model.stats())["rows_cancelled"] == base["rows_cancelled"] + 2 else None))
        assert after["cancelled_tokens"] - base["cancelled_tokens"] < 2 * LONG, after
        results = [f.result(60) for f in futures[1:]]
    finally:
        cancel()
        pool.shutdown(wait=True)
    for kind, i, text in results:
        assert text == sequential[kind, i].text, (kind, i)
    assert model.stats()["batches"] == base["batches"] + 2, "nothing else ran"
    _idle(service)


def _four_others(service, client):
    return [
        lambda: ("text", 1, _grpc_generate(service, _prompt("text", 1), N_TOKENS).text),
        lambda: ("text", 2, _grpc_stream(service, _prompt("text", 2), N_TOKENS)[0]),
        lambda: ("text", 3, _http_completion_stream(client, 3, N_TOKENS)[0]),
        lambda: ("chat", 4, _http_chat_stream(client, 4, N_TOKENS)),
    ]


def test_a_cancelled_grpc_stream_stops_its_row_and_its_batch_goes_on(service, client, sequential):
    """A gRPC GenerateStream cancelled after its first chunk stops its own row within a few
    seconds (long before its max_new_tokens); the other rows of its batch (gRPC and HTTP)
    finish with their sequential greedy answers."""
    from tunesmith.api.inference.v1 import inference_pb2

    _idle(service)
    base = service["model"].stats()
    holder: dict = {}

    def victim():
        holder["call"] = service["stub"].GenerateStream(
            _request(inference_pb2.Prompt(text=BLOCKER + "!"), LONG), timeout=60)
        holder["first"] = next(holder["call"])

    calls = [victim] + _four_others(service, client)
    pool, futures = _behind_a_grpc_blocker(service, calls, rows=5)
    _check_cancelled_mid_batch(service, sequential, base, futures, pool,
                               lambda: futures[0].result(30) is None and holder["first"].delta,
                               lambda: holder["call"].cancel() if "call" in holder else None)


def test_an_http_client_that_closes_its_stream_stops_its_row(service, client, sequential):
    """The same for an HTTP streaming client (the openai client) that closes its response
    after the first chunk."""
    _idle(service)
    base = service["model"].stats()
    holder: dict = {}

    def victim():
        holder["stream"] = client.completions.create(model="tiny", prompt=BLOCKER + "?", max_tokens=LONG,
                                                     temperature=0, stream=True)
        holder["first"] = next(iter(holder["stream"]))

    calls = [victim] + _four_others(service, client)
    pool, futures = _behind_a_grpc_blocker(service, calls, rows=5)
    try:
        _check_cancelled_mid_batch(service, sequential, base, futures, pool,
                                   lambda: futures[0].result(30) is None and holder["first"].choices,
                                   lambda: holder["stream"].close() if "stream" in holder else None)
    finally:  # where the server leaves the closed stream's body to the garbage collector, collect it now
        import gc

        holder.clear()
        gc.collect()


# --- the queue's rules, on the model itself ------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(varied_model_dir):
    from tunesmith_builtin.inference_transformers import TransformersBackend

    model = TransformersBackend(max_batch_size=8).load(varied_model_dir, dtype="float32", max_model_len=MAX_MODEL_LEN)
    yield model
    model.close()


def _behind_a_blocker(model, calls, rows: int):
    """Run `calls` (functions of no argument) on threads while a long stream keeps the worker
    busy; once their `rows` rows are queued, close the stream, so they start together. Returns
    their results in order."""
    blocker = model.stream(BLOCKER, Sampling(max_new_tokens=LONG))
    assert next(blocker)
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
        _wait_for(f"{rows} rows queued", lambda: model.stats()["queued"] == rows)
        blocker.close()
        return [f.result(60) for f in futures]


def test_rows_with_their_own_limits_and_stop_strings_share_a_batch(tiny):
    """Greedy requests with different max_new_tokens and stop strings run as one batch; each
    row stops on its own and equals its answer generated alone."""
    alone = {i: tiny.generate([PROMPTS[i]], Sampling(max_new_tokens=8 + 4 * i))[0] for i in range(4)}
    alone20 = tiny.generate([PROMPTS[0]], Sampling(max_new_tokens=20))[0]
    assert len(alone[2].text) >= 6, alone[2]
    stop = alone[2].text[3:5]
    cut = alone[2].text[:alone[2].text.index(stop)]
    streamed = {}

    def streaming(i):
        s = tiny.stream(PROMPTS[i], Sampling(max_new_tokens=8 + 4 * i))
        text = "".join(s)
        streamed[i] = s.generation
        return text

    base = tiny.stats()
    got = _behind_a_blocker(tiny, [
        lambda: tiny.generate([PROMPTS[0]], Sampling(max_new_tokens=8))[0],
        lambda: streaming(1),
        lambda: tiny.generate([PROMPTS[2]], Sampling(max_new_tokens=16, stop=[stop]))[0],
        lambda: tiny.generate([PROMPTS[3], PROMPTS[0]], Sampling(max_new_tokens=20)),
    ], rows=5)
    stats = tiny.stats()
    assert stats["batches"] == base["batches"] + 2 and stats["last_batch_rows"] == 5, stats
    assert got[0] == alone[0]
    assert got[1] == alone[1].text and streamed[1] == alone[1]
    assert got[2].text == cut and got[2].finish_reason == "stop"
    assert got[3][0] == alone[3]
    assert got[3][1] == alone20


def test_incompatible_requests_wait_for_their_own_batch(tiny):
    """Sampled rows never share a batch with greedy rows, and a seeded sampled request shares
    its batch with nobody else, so its seed reproduces its text whatever else is queued."""
    seeded = Sampling(max_new_tokens=12, temperature=1.0, seed=11)
    alone = tiny.generate(PROMPTS[:2], seeded)
    base = tiny.stats()
    got = _behind_a_blocker(tiny, [
        lambda: tiny.generate(PROMPTS[2:5], Sampling(max_new_tokens=12)),
        lambda: tiny.generate(PROMPTS[:2], seeded),
        lambda: tiny.generate(PROMPTS[5:7], Sampling(max_new_tokens=12, temperature=1.0)),
        lambda: tiny.generate(PROMPTS[7:8], Sampling(max_new_tokens=12)),
    ], rows=8)
    stats = tiny.stats()
    # greedy (3 + 1 rows), seeded (2), unseeded sampled (2): three batches after the blocker's
    assert stats["batches"] == base["batches"] + 4, stats
    assert stats["max_batch_rows"] >= 4
    assert [g.text for g in got[1]] == [g.text for g in alone]
    assert [g.text for g in got[0]] == [tiny.generate([p], Sampling(max_new_tokens=12))[0].text for p in PROMPTS[2:5]]


def test_close_aborts_queued_and_running_rows(varied_model_dir):
    """close() aborts the running batch within a token and everything queued: generate()
    callers get FailedPrecondition, streams end "cancelled"; the worker thread ends."""
    from tunesmith.core.errors import FailedPrecondition
    from tunesmith_builtin.inference_transformers import TransformersBackend

    def workers():
        return sum(1 for t in threading.enumerate() if t.name == "tunesmith-transformers-batch" and t.is_alive())

    before = workers()
    model = TransformersBackend().load(varied_model_dir, dtype="float32", max_model_len=MAX_MODEL_LEN)
    running = model.stream(BLOCKER, Sampling(max_new_tokens=LONG))
    assert next(running)
    outcome: dict[str, BaseException] = {}

    def queued():
        try:
            model.generate([PROMPTS[0]], Sampling(max_new_tokens=4, temperature=1.0))
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome["error"] = exc

    waiter = threading.Thread(target=queued)
    waiter.start()
    _wait_for("a queued row", lambda: model.stats()["queued"] == 1)
    model.close()
    waiter.join(30)
    assert isinstance(outcome.get("error"), FailedPrecondition), outcome
    list(running)
    assert running.generation is not None and running.generation.finish_reason == "cancelled"
    assert running.generation.completion_tokens < LONG
    assert workers() == before, "the model's worker thread should have ended"
    with pytest.raises(FailedPrecondition):
        model.generate([PROMPTS[0]], Sampling(max_new_tokens=2))
