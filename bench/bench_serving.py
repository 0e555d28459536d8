"""Serving benchmarks on the bundled SmolLM2-135M-Instruct, ratios measured side by side in one run.

    python bench/bench_serving.py [--backend vllm|transformers] [--parts overhead,concurrency,multilora]
                                  [--clients 32] [--max-tokens 64] [--adapters 4]

Every run uses the same 32 short chat prompts (greedy, --max-tokens new tokens, no stop strings
beyond the model's EOS) and counts completion tokens as the engines report them.

1. overhead: the inference service (in this process, on localhost) serves --backend. The same
   prompts go, --clients at once, (a) to the service's own loaded engine called directly
   (LoadedModel.generate, one prompt per call, one thread per client), (b) through gRPC
   Generate, (c) through the HTTP API with the official `openai` client. Prints tokens/s of each
   and (b)/(a), (c)/(a). Goal: >= 0.9x.
2. concurrency: --clients HTTP streaming clients at once against the service, against sequential
   Hugging Face `generate` (AutoModelForCausalLM, float32, one prompt at a time: what a user
   without a server writes). Prints aggregate tokens/s of both and the ratio (goal >= 3x), and
   for the clients p50/p95 latency and p50/p95 time to first token.
3. multilora: --adapters random LoRA adapters (r=8) served together on one engine (one load of
   the base with adapters enabled, then LoadAdapter each) against the same adapters merged into
   --adapters full models loaded one at a time (LoadModel, its share of the requests, UnloadModel).
   The same requests (--clients, spread round-robin over the adapters; concurrent on the one
   engine, and for each merged model its share concurrently). Prints load seconds, total
   seconds and tokens/s of both.

The bundled model is converted once into a temporary storage root (or --storage).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TOPICS = ["the moon", "bread", "rain", "a library", "trains", "coffee", "the ocean", "winter", "bees", "maps",
          "music", "a garden", "bicycles", "clocks", "volcanoes", "tea", "owls", "snow", "bridges", "paper",
          "glass", "rivers", "salt", "chess", "forests", "candles", "deserts", "whales", "kites", "honey",
          "lighthouses", "autumn"]


def prompts(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Write three sentences about {TOPICS[i % len(TOPICS)]}."}] for i in range(n)]


def chat_proto(messages):
    from tunesmith.api.inference.v1 import inference_pb2

    roles = {"user": inference_pb2.CHAT_ROLE_USER, "system": inference_pb2.CHAT_ROLE_SYSTEM}
    return inference_pb2.Prompt(chat=inference_pb2.Conversation(messages=[
        inference_pb2.ChatMessage(role=roles[m["role"]], content=m["content"]) for m in messages]))


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def concurrent(fn, items, clients):
    """(results in order, wall seconds) of fn over items with `clients` threads."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(fn, items))
    return results, time.perf_counter() - t0


class Service:
    """The inference service in this process (gRPC + HTTP), with stubs and an openai client."""

    def __init__(self, runtime):
        import grpc
        import openai

        from tunesmith.api.inference.v1 import inference_pb2_grpc
        from tunesmith.cli.servers import start_service

        self.running = start_service("inference", runtime, port=0, host="127.0.0.1", http_port=0)
        self.channel = grpc.insecure_channel(self.running.address)
        self.stub = inference_pb2_grpc.InferenceServiceStub(self.channel)
        self.openai = openai.OpenAI(base_url=f"http://127.0.0.1:{self.running.http_port}/v1", api_key="unused",
                                    max_retries=0, timeout=600)

    def load(self, name, model, backend, *, adapters=False):
        from tunesmith.api.inference.v1 import inference_pb2

        t0 = time.perf_counter()
        self.stub.LoadModel(inference_pb2.LoadModelRequest(name=name, model=model, backend=backend,
                                                           enable_adapters=adapters), timeout=60)
        while True:
            served = self.stub.GetServedModel(inference_pb2.GetServedModelRequest(name=name))
            if served.state == inference_pb2.SERVED_MODEL_STATE_READY:
                return time.perf_counter() - t0
            if served.state == inference_pb2.SERVED_MODEL_STATE_FAILED:
                raise RuntimeError(served.error.message)
            time.sleep(0.2)

    def unload(self, name):
        from tunesmith.api.inference.v1 import inference_pb2

        self.stub.UnloadModel(inference_pb2.UnloadModelRequest(name=name), timeout=120)

    def engine(self, name):
        return self.running.servicer.served[name][1]

    def grpc_generate(self, model, messages, max_tokens):
        from tunesmith.api.inference.v1 import inference_pb2

        r = self.stub.Generate(inference_pb2.GenerateRequest(
            model=model, prompts=[chat_proto(messages)],
            sampling=inference_pb2.SamplingParams(max_new_tokens=max_tokens)), timeout=600)
        return r.completions[0].text, r.completions[0].completion_tokens

    def http_generate(self, model, messages, max_tokens):
        r = self.openai.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
        return r.choices[0].message.content, r.usage.completion_tokens

    def http_stream(self, model, messages, max_tokens):
        """(text, completion tokens, latency s, time to first token s) of one streamed request."""
        t0 = time.perf_counter()
        first = None
        parts = []
        tokens = 0
        for chunk in self.openai.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                         temperature=0, stream=True,
                                                         stream_options={"include_usage": True}):
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                if first is None:
                    first = time.perf_counter() - t0
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts), tokens, time.perf_counter() - t0, first if first is not None else float("nan")

    def close(self):
        self.channel.close()
        self.running.stop(0)


def part_overhead(svc, backend, args):
    from tunesmith.core.contracts import Sampling

    svc.load("smol", "smollm2-135m-instruct", backend)
    engine = svc.engine("smol")
    items = prompts(args.clients)
    sampling = Sampling(max_new_tokens=args.max_tokens)
    engine.generate(items[:2], sampling)  # warm-up, not timed

    def raw(m):
        g = engine.generate([m], sampling)[0]
        return g.text, g.completion_tokens

    runs = {}
    for label, fn in (("engine in-process", raw),
                      ("gRPC Generate", lambda m: svc.grpc_generate("smol", m, args.max_tokens)),
                      ("HTTP (openai client)", lambda m: svc.http_generate("smol", m, args.max_tokens))):
        results, wall = concurrent(fn, items, args.clients)
        runs[label] = (results, wall, sum(t for _, t in results) / wall)
    base_texts = [t for t, _ in runs["engine in-process"][0]]
    print(f"\n== serving overhead ({backend}, {args.clients} concurrent single-prompt requests, "
          f"{args.max_tokens} greedy new tokens) ==")
    raw_rate = runs["engine in-process"][2]
    for label, (results, wall, rate) in runs.items():
        same = sum(t == b for (t, _), b in zip(results, base_texts))
        print(f"{label:<22} {rate:7.1f} tok/s  {wall:6.1f} s  ratio {rate / raw_rate:4.2f}x  "
              f"same text as the engine: {same}/{len(results)}")
    svc.unload("smol")


def part_concurrency(svc, backend, args, model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    items = prompts(args.clients)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model.generate(**tok.apply_chat_template(items[0], add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True), max_new_tokens=4, do_sample=False)  # warm-up
    t0 = time.perf_counter()
    hf_tokens, hf_latency = 0, []
    for m in items:
        t1 = time.perf_counter()
        enc = tok.apply_chat_template(m, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=args.max_tokens, do_sample=False)
        hf_tokens += out.shape[1] - enc["input_ids"].shape[1]
        hf_latency.append(time.perf_counter() - t1)
    hf_wall = time.perf_counter() - t0
    del model

    svc.load("smol", "smollm2-135m-instruct", backend)
    svc.http_stream("smol", items[0], 4)  # warm-up
    results, wall = concurrent(lambda m: svc.http_stream("smol", m, args.max_tokens), items, args.clients)
    tokens = sum(r[1] for r in results)
    lat, ttft = [r[2] for r in results], [r[3] for r in results]
    print(f"\n== {args.clients} concurrent streaming HTTP clients ({backend}) vs sequential HF generate ==")
    print(f"sequential HF generate   {hf_tokens / hf_wall:7.1f} tok/s  {hf_wall:6.1f} s  "
          f"latency p50 {pct(hf_latency, 50):.2f} s p95 {pct(hf_latency, 95):.2f} s")
    print(f"{args.clients} clients ({backend})     {tokens / wall:7.1f} tok/s  {wall:6.1f} s  "
          f"latency p50 {pct(lat, 50):.2f} s p95 {pct(lat, 95):.2f} s  "
          f"TTFT p50 {pct(ttft, 50):.2f} s p95 {pct(ttft, 95):.2f} s")
    print(f"ratio {tokens / wall / (hf_tokens / hf_wall):.2f}x aggregate tokens/s")
    svc.unload("smol")


def make_adapters(runtime, model_dir, n, work: Path):
    """n random LoRA adapters (stored artifacts) and the same adapters merged (registered models)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapters, merged = [], []
    for i in range(n):
        torch.manual_seed(i)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        folder = work / f"adapter-{i}"
        get_peft_model(base, LoraConfig(r=8, lora_alpha=32, target_modules="all-linear",
                                        init_lora_weights=False)).save_pretrained(str(folder))
        adapters.append(runtime.storage.put_artifact("adapter", str(folder)).uri)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        full = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
        out = work / f"merged-{i}"
        full.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(str(out))  # chat template included
        runtime.models.register(f"merged-{i}", str(out))
        merged.append(f"merged-{i}")
    return adapters, merged


def part_multilora(svc, backend, args, runtime, model_dir, work):
    from tunesmith.api.inference.v1 import inference_pb2

    adapters, merged = make_adapters(runtime, model_dir, args.adapters, work)
    items = prompts(args.clients)
    jobs = [(i % args.adapters, m) for i, m in enumerate(items)]

    t0 = time.perf_counter()
    svc.load("base", "smollm2-135m-instruct", backend, adapters=True)
    for i, uri in enumerate(adapters):
        svc.stub.LoadAdapter(inference_pb2.LoadAdapterRequest(name=f"a{i}", base="base", adapter={"uri": uri}),
                             timeout=300)
    multi_load = time.perf_counter() - t0
    results, multi_wall = concurrent(lambda j: svc.grpc_generate(f"a{j[0]}", j[1], args.max_tokens), jobs,
                                     args.clients)
    multi_tokens = sum(t for _, t in results)
    for i in range(args.adapters):
        svc.stub.UnloadAdapter(inference_pb2.UnloadAdapterRequest(name=f"a{i}"))
    svc.unload("base")

    merged_load = merged_gen = 0.0
    merged_tokens = 0
    for i, name in enumerate(merged):
        merged_load += svc.load(name, name, backend)
        share = [m for k, m in jobs if k == i]
        res, wall = concurrent(lambda m: svc.grpc_generate(name, m, args.max_tokens), share, len(share))
        merged_gen += wall
        merged_tokens += sum(t for _, t in res)
        svc.unload(name)
    print(f"\n== {args.adapters} LoRA adapters on one engine vs {args.adapters} merged models one at a time "
          f"({backend}, {args.clients} requests) ==")
    print(f"adapters on one engine   load {multi_load:6.1f} s  generate {multi_wall:6.1f} s  "
          f"{multi_tokens / multi_wall:7.1f} tok/s  total {multi_load + multi_wall:6.1f} s")
    print(f"merged, one at a time    load {merged_load:6.1f} s  generate {merged_gen:6.1f} s  "
          f"{merged_tokens / merged_gen:7.1f} tok/s  total {merged_load + merged_gen:6.1f} s")
    print(f"ratio total time merged / adapters {(merged_load + merged_gen) / (multi_load + multi_wall):.2f}x, "
          f"throughput adapters / merged {(multi_tokens / multi_wall) / (merged_tokens / merged_gen):.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="vllm", choices=["vllm", "transformers"])
    p.add_argument("--parts", default="overhead,concurrency,multilora")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--adapters", type=int, default=4)
    p.add_argument("--storage", default=None)
    args = p.parse_args()

    import os

    os.environ.setdefault("TUNESMITH_INFERENCE_MAX_QUEUE", str(max(64, 2 * args.clients)))
    from tunesmith.core.models import BUNDLED_NAME
    from tunesmith.core.runtime import Runtime

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    runtime = Runtime.create(args.storage or str(work / "storage"))
    runtime.models.ensure_bundled()
    model_dir = str(runtime.models.local_path(BUNDLED_NAME))
    svc = Service(runtime)
    try:
        parts = args.parts.split(",")
        if "overhead" in parts:
            part_overhead(svc, args.backend, args)
        if "concurrency" in parts:
            part_concurrency(svc, args.backend, args, model_dir)
        if "multilora" in parts:
            part_multilora(svc, args.backend, args, runtime, model_dir, work)
    finally:
        svc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
