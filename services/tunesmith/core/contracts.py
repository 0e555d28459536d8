"""The shapes plugins provide. Hooks in tunesmith.core.hookspecs register objects of these kinds.

These are structural Protocols: a plugin need not import or subclass them. Each Protocol lists
exactly the members the services call (nothing is looked up with getattr), and every
registration is checked against its kind's Protocol when the plugins load
(tunesmith.core.plugins; see `protocol_problems`). `tunesmith.testing.contracts` exercises a
plugin's behaviour against the same contracts.

Errors: a bad option or request is `tunesmith.core.errors.InvalidArgument` with `field` set to
the option or argument name; an unknown name is `NotFound`; a call in the wrong state is
`FailedPrecondition`.

Everything heavy (torch, transformers, peft, vllm) is imported inside the methods, never at
module import.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ContextManager, Iterator, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from pathlib import Path

    from tunesmith.core.storage import Artifact


# --- PEFT methods -------------------------------------------------------------------------
@runtime_checkable
class PeftMethod(Protocol):
    """A fine-tuning method (full, LoRA, QLoRA, IA3, prefix or prompt tuning, ...).

    Attributes (what the method supports; the services decide from these, never from a name):
        name: registry name, e.g. "lora".
        supports_merge: the trained adapter can be merged into the base weights (peft's
            merge_and_unload). False (prefix/prompt tuning): a merge is refused with
            FAILED_PRECONDITION, and the adapter is evaluated and served on top of its base.
        servable_by_vllm: vLLM can serve what it saves (an unmerged LoRA adapter, or a model).
        quantized_base: the base is loaded quantised (QLoRA); load_kwargs says how.
        artifact_kind: what save() writes: "adapter" (a peft adapter folder that
            peft.PeftModel.from_pretrained loads) or "model" (a transformers model folder that
            AutoModelForCausalLM.from_pretrained loads: full fine-tuning).
        prompt_learning: the method feeds virtual tokens (peft prompt learning). The trainer then
            pads rows on the right and passes no position_ids or logits_to_keep; the logits may
            be longer than the input by the virtual tokens, which come first and are dropped
            before the loss.

    `options` is a JSON-like dict (numbers from a protobuf Struct arrive as floats): rank, alpha,
    dropout, target_modules and method-specific keys.
    """

    name: str
    supports_merge: bool
    servable_by_vllm: bool
    quantized_base: bool
    artifact_kind: str
    prompt_learning: bool

    def validate(self, options: dict[str, Any]) -> dict[str, Any]:
        """Return the options normalised, with defaults filled in (validate({}) gives every
        default; validating the result again returns it unchanged). Does not modify `options`.

        Raises InvalidArgument with `field` set to the option key alone ("rank", not
        "method.rank"); the trainer service prefixes the request path itself. A method that
        needs a library that is missing (bitsandbytes for QLoRA) raises FailedPrecondition.
        """

    def load_kwargs(self, options: dict[str, Any], device: str) -> dict[str, Any]:
        """Extra kwargs for AutoModelForCausalLM.from_pretrained (e.g. quantization_config);
        {} when none. `device` is "cpu", "cuda", ... Raises like validate() on bad options."""

    def apply(self, model: Any, options: dict[str, Any]) -> Any:
        """Return `model` made trainable for this method (e.g. a peft PeftModel): at least one
        parameter requires grad, forward(input_ids, attention_mask) gives .logits, and save()
        writes what the method trains. Raises like validate() on bad options, before touching
        the model."""

    def parameter_counts(self, model: Any) -> tuple[int, int]:
        """(trainable, total) parameters of an applied model, exactly as peft counts them
        (PeftModel.get_nb_trainable_parameters) for a peft method."""

    def save(self, model: Any, folder: Path) -> None:
        """Write the trained result of an applied model into `folder` in artifact_kind's
        format (the tokenizer is saved by the caller)."""


# --- Training recipes ---------------------------------------------------------------------
@dataclass
class RecipeContext:
    """What a recipe's setup() gets from the training loop.

    model: the method-applied model, on its device (unwrapped: the loop owns any DDP wrapper).
    tokenizer: the base model's tokenizer, with a pad token.
    method: the PeftMethod (recipes read its prompt_learning flag).
    hyperparameters: resolved (tunesmith.trainer.hyperparameters.resolve).
    options: the recipe's own options, as its validate_options() returned them.
    device: a torch device string ("cpu", "cuda:0").
    log: one line to the job's events.
    """

    model: Any
    tokenizer: Any
    method: PeftMethod
    hyperparameters: dict[str, Any]
    options: dict[str, Any]
    device: str
    log: Any


@runtime_checkable
class TrainingRecipe(Protocol):
    """One training objective (SFT, DPO, ...), torchtune-style: setup, train step, evaluate.

    The training loop (tunesmith.trainer.loop) owns everything else: device placement and
    multi-process launch (accelerate), the optimizer and LR schedule, gradient accumulation
    and clipping, checkpoints and resume, events, cancellation, early stopping and saving
    (through the method's save()).

    A batch is whatever the recipe returns from train_batches(), as a dict that carries two
    ints besides its tensors: "n_items", the loss normaliser (label tokens for SFT, pairs for
    DPO: a gradient-accumulation group is normalised by its items' sum), and "n_tokens",
    the non-padding tokens (for tokens/s).

    Attributes:
        name: registry name ("sft", "dpo").
        description: one line for users.
        objective: the TrainingJobSpec objective it serves by default ("sft", "dpo"), or "" for
            a recipe that is only chosen by name.
        row_fields: fields every row of the prepared train split must have, e.g.
            ("prompt", "completion") or ("prompt", "completion", "rejected").
        supports_packing: whether hyperparameters.packing is accepted.
    """

    name: str
    description: str
    objective: str
    row_fields: tuple
    supports_packing: bool

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The recipe's options normalised with defaults (e.g. DPO's beta); InvalidArgument
        with `field` set to the option key. {} is always valid."""

    def setup(self, context: RecipeContext, train_rows: Sequence[dict], validation_rows: Sequence[dict]) -> dict[str, Any]:
        """Tokenise the rows and keep what the other calls need. Returns figures for the log
        and the result: at least "train_examples" and "truncated_rows"."""

    def train_batches(self, epoch: int, seed: int) -> list[dict[str, Any]]:
        """Every micro-batch of one epoch, in order. Deterministic in (epoch, seed): the loop
        resumes mid-epoch by recomputing the list and skipping what was done."""

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        """(summed loss over the batch's items as a scalar tensor, extra metrics as floats)."""

    def evaluate(self, model: Any) -> dict[str, float]:
        """Validation metrics (model in eval mode, no grad). "loss" is required when there are
        validation rows (early stopping and the best checkpoint use it); {} without them."""


# --- Prompt templates ---------------------------------------------------------------------
@dataclass(frozen=True)
class RenderedExample:
    """One example after templating. The trainer appends EOS to `completion`.

    Services read only `prompt` and `completion`; a plugin may return any object with those two
    string attributes.
    """

    prompt: str
    completion: str


@runtime_checkable
class PromptTemplate(Protocol):
    """Turns canonical fields (input, output, instruction, messages, ...) into prompt+completion.

    Attributes:
        name: registry name, e.g. "classification".
        description: one line for users (shown by ListTemplates-style listings).
        needs_tokenizer: render() needs the model's tokenizer (it renders the model's own chat
            template). The data service refuses such a template without a tokenizer, and counts
            its prompt tokens without adding special tokens again.
    """

    name: str
    description: str
    needs_tokenizer: bool

    def validate_options(self, options: dict[str, Any]) -> None:
        """Check `options` (the dataset's template_options) once per dataset, before any row is
        rendered. Raises InvalidArgument with `field` set to the option key for an unknown or
        mistyped option; {} is always valid."""

    def render(self, fields: dict[str, Any], options: dict[str, Any], tokenizer: Any | None) -> RenderedExample:
        """Render one row (positional arguments). Raise KeyError(field name) for a missing field,
        ValueError (or InvalidArgument) for a row it cannot render; the data service reports
        either against the row. Templates with needs_tokenizer False must accept tokenizer=None;
        the others raise ValueError for None. Must not modify `fields` or `options`."""


# --- Benchmarks ---------------------------------------------------------------------------
#: How a metric's confidence interval and paired test are computed (MetricSpec.statistic):
#: - "binary": a mean of per-row 0/1 values; bootstrap interval, McNemar's exact test;
#: - "mean":   a mean of per-row real values; bootstrap interval, paired permutation test;
#: - "corpus": not a mean of rows (macro-F1, BLEU, ROUGE-Lsum, perplexity); recomputed from the
#:   resampled rows' statistics for the bootstrap interval and a paired bootstrap test.
METRIC_STATISTICS = frozenset({"binary", "mean", "corpus"})

#: What a benchmark needs from the model (Benchmark.needs).
BENCHMARK_NEEDS = frozenset({"generation", "loglikelihood"})

#: Dataset facts a benchmark may require (Benchmark.requires); CreateEvaluation refuses a
#: dataset that lacks one: "labels" (a label set: a classification dataset or options.labels),
#: "choices" (a multiple-choice dataset: rows with choices and a gold index).
BENCHMARK_REQUIREMENTS = frozenset({"labels", "choices"})


@dataclass(frozen=True)
class MetricSpec:
    """One metric a benchmark reports. name: key in aggregate()'s dict; statistic: one of
    METRIC_STATISTICS; higher_is_better: False for e.g. perplexity (the regression gate and the
    report read deltas with it)."""

    name: str
    statistic: str
    higher_is_better: bool = True
    description: str = ""


@dataclass(frozen=True)
class LogLikelihood:
    """Log-likelihood of one continuation given its context, as lm-evaluation-harness defines it.

    logprob: summed natural-log probability of the continuation's tokens; tokens: how many
    continuation tokens; is_greedy: every continuation token was the argmax."""

    logprob: float
    tokens: int
    is_greedy: bool


@dataclass(frozen=True)
class EvalRow:
    """One evaluated row, as benchmarks and error checks see it.

    prompt / reference: the rendered prompt and the reference completion (stripped).
    prediction / finish_reason / completion_tokens: the model's generated answer
    ("stop" | "length" | "cancelled"), empty for benchmarks that only need log-likelihoods.
    labels: the dataset's label set (classification), else ().
    choices / gold: a multiple-choice row's choices and the index of the right one, else () / -1.
    loglikelihoods: one per request of Benchmark.requests(row), in order (loglikelihood
    benchmarks only).
    max_new_tokens: the generation limit the answer ran under (0 when none).
    """

    prompt: str
    reference: str
    prediction: str = ""
    finish_reason: str = ""
    completion_tokens: int = 0
    labels: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    gold: int = -1
    loglikelihoods: tuple[LogLikelihood, ...] = ()
    max_new_tokens: int = 0


@runtime_checkable
class Benchmark(Protocol):
    """Scores rows: per-row statistics, and a corpus-level aggregate computed from them.

    Attributes:
        name: registry name, e.g. "exact_match".
        description: one line for users.
        needs: "generation" (scores EvalRow.prediction) or "loglikelihood" (scores
            EvalRow.loglikelihoods for the (context, continuation) pairs requests() asks for).
        requires: subset of BENCHMARK_REQUIREMENTS the dataset must provide.
        metrics: the MetricSpecs aggregate() returns, in report order.

    The evaluator calls score_rows once over all rows, then aggregate() on all of them for the
    reported value and on resampled lists (rows drawn with replacement) for bootstrap intervals
    and the paired bootstrap test. For "binary" and "mean" metrics each row statistic must hold
    that row's value under the metric's name (the evaluator reads it for McNemar's and the
    permutation test), and aggregate() must return their mean.
    """

    name: str
    description: str
    needs: str
    requires: frozenset[str]
    metrics: tuple[MetricSpec, ...]

    def validate_options(self, options: dict[str, Any]) -> None:
        """Raise InvalidArgument(field=<option key>) for an unknown or bad option (e.g. a typo);
        called at CreateEvaluation with EvaluationSpec.options[<benchmark name>] (or {})."""

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        """(context, continuation) pairs whose log-likelihoods this row needs; [] for
        generation benchmarks."""

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        """One statistics dict per row, in row order (JSON-serialisable, deterministic)."""

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        """Every metric in `metrics` from the given row statistics (which may repeat rows).
        With no rows, each metric's worst value or 0.0. Predictions equal to their references
        get each metric's best value."""


# --- Error analysis ---------------------------------------------------------------------------
@runtime_checkable
class ErrorCheck(Protocol):
    """One kind of mistake the evaluator counts per model (empty answers, repetition, ...).

    Attributes:
        name: registry name, e.g. "empty_answer".
        description: one line for users, shown in the report.
        categories: every category classify() may return (e.g. ("invalid_label.near_miss",
            "invalid_label.invented")); one category per check is the usual case.
    """

    name: str
    description: str
    categories: tuple[str, ...]

    def classify(self, row: EvalRow) -> str | None:
        """The category this row's prediction falls in, or None when the check does not apply
        or finds nothing. Deterministic; must not raise for any prediction text."""


# --- Pairwise judging -------------------------------------------------------------------------
#: What a judge may answer about a pair: the first answer (A), the second (B), or a tie.
VERDICTS = frozenset({"A", "B", "tie"})


@runtime_checkable
class JudgeTemplate(Protocol):
    """Turns a pairwise comparison into a judge prompt and reads the judge's reply.

    Attributes: name (registry name), description (one line).
    """

    name: str
    description: str

    def render(self, prompt: str, answer_a: str, answer_b: str, *, rubric: str = "",
               reference: str = "") -> str:
        """The prompt the judge model sees."""

    def parse(self, reply: str) -> str:
        """The verdict in VERDICTS that the judge's reply gives ("tie" when it gives none)."""


@runtime_checkable
class Judge(Protocol):
    """A rule that compares two answers to one prompt without a model (for tests and for
    checks that need no model: "shorter", "matches the reference", ...).

    Attributes: name (registry name), description (one line).
    """

    name: str
    description: str

    def compare(self, prompt: str, answer_a: str, answer_b: str, *, reference: str = "") -> str:
        """A verdict in VERDICTS. Deterministic."""


# --- Inference backends -------------------------------------------------------------------
@dataclass
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    repetition_penalty: float = 1.0
    #: None: no log-probabilities; N >= 0: each completion token's logprob and the N most likely
    #: alternatives at its position (Generation.logprobs; streams: GenerationStream.logprobs).
    logprobs: int | None = None


@dataclass
class TokenLogprob:
    """A completion token, its log-probability under the model (natural log, before
    temperature / top-p), and the most likely tokens at its position: (token, logprob, id),
    most likely first."""

    token: str
    logprob: float
    token_id: int
    top: list[tuple[str, float, int]] = field(default_factory=list)


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "cancelled"
    #: One per completion token when Sampling.logprobs is set, else None.
    logprobs: list[TokenLogprob] | None = None


#: Every finish_reason a Generation may carry.
FINISH_REASONS = frozenset({"stop", "length", "cancelled"})


@dataclass(frozen=True)
class AdapterLimits:
    """How many adapters a served model takes at once and their largest LoRA rank (the
    inference service enforces both; vLLM also sizes its engine by them)."""

    max_adapters: int = 8
    max_rank: int = 64

# A prompt is either raw completion text or a chat: a list of {"role", "content"} dicts.
PromptInput = str | list[dict[str, str]]


@runtime_checkable
class GenerationStream(Protocol):
    """What LoadedModel.stream() returns: an iterator of text deltas.

    `generation` is None until the iterator is exhausted, then the whole result (text = the
    deltas joined, token counts, finish_reason) for usage reporting. close() stops generation
    (within a token or so) and is harmless when repeated or after exhaustion.
    """

    generation: Generation | None
    #: TokenLogprobs of the tokens so far when Sampling.logprobs is set (else stays empty).
    logprobs: list[TokenLogprob]

    def __iter__(self) -> Iterator[str]:
        """The stream itself."""

    def __next__(self) -> str:
        """The next text delta; StopIteration at the end."""

    def close(self) -> None:
        """Cancel generation and free what it holds."""


@runtime_checkable
class LoadedModel(Protocol):
    """A model loaded by an inference backend. Safe to call from several threads at once.

    Attributes:
        backend: the backend's name ("vllm", "transformers").
        dtype: the dtype it actually runs in ("float32", "bfloat16", ...), never "".

    Unknown adapter names raise NotFound (field "adapter"); calls after close() raise
    FailedPrecondition.
    """

    backend: str
    dtype: str
    #: Context length in tokens, prompt and completion together.
    max_model_len: int

    def generate(self, prompts: Sequence[PromptInput], sampling: Sampling, *,
                 adapter: str | None = None) -> list[Generation]:
        """One Generation per prompt, in prompt order, generated as one batch (or the engine's
        own batching). adapter=None runs the base weights; a name runs that loaded adapter.
        Bad sampling values or prompts raise InvalidArgument naming the field."""

    def stream(self, prompt: PromptInput, sampling: Sampling, *, adapter: str | None = None) -> GenerationStream:
        """Text deltas for one prompt; with greedy sampling they join to generate()'s text."""

    def loglikelihood(self, requests: Sequence[tuple[str, str]], *,
                      adapter: str | None = None) -> list[LogLikelihood]:
        """One LogLikelihood per (context, continuation), in order, from the prompt's log-probs
        (no generation). Tokenised as lm-evaluation-harness does: trailing whitespace of the
        context moves to the front of the continuation, the pair is encoded whole and the
        continuation is the tokens after the context's own encoding. An empty continuation
        raises InvalidArgument(field="continuation")."""

    def load_adapter(self, name: str, path: str) -> None:
        """Load the peft adapter folder `path` under `name` (loading a name again replaces it).
        FailedPrecondition when the model was loaded without enable_adapters."""

    def unload_adapter(self, name: str) -> None:
        """Drop adapter `name`; NotFound when none by that name is loaded."""

    def adapter_unsupported(self, config: dict) -> str:
        """Why this engine cannot serve an adapter with this adapter_config.json ("" when it can),
        e.g. "vLLM serves LoRA adapters only, not DoRA". Cheap: reads the config only."""

    def close(self) -> None:
        """Free the model's memory. Harmless when repeated."""


@runtime_checkable
class InferenceBackend(Protocol):
    """An engine that loads models from local folders (vllm, transformers).

    Attributes:
        name: registry name; equal to LoadedModel.backend of what it loads.
    """

    name: str

    def available(self) -> tuple[bool, str]:
        """(usable here?, a non-empty reason). Must be cheap: no model load, no heavy import if
        avoidable."""

    def load(self, model_path: str, *, dtype: str = "", max_model_len: int = 0,
             enable_adapters: bool = False, adapter_limits: AdapterLimits | None = None) -> LoadedModel:
        """Load the Hugging Face model folder `model_path`. dtype "" is the backend's default;
        max_model_len 0 is the model's own limit; enable_adapters allows load_adapter();
        adapter_limits (None: AdapterLimits()) sizes the engine for adapters where it needs to."""


# --- Training executors -------------------------------------------------------------------
@runtime_checkable
class ExecutionHandle(Protocol):
    """A submitted job's process (or pod, ...)."""

    def poll(self) -> int | None:
        """Exit code, or None while running. 0 is success."""

    def cancel(self) -> None:
        """Ask the work to stop (SIGTERM or equivalent, then harder); returns at once and is
        harmless after the work ended."""

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` seconds (None: forever) for the exit code; None on timeout."""


@runtime_checkable
class TrainingExecutor(Protocol):
    """Where a training job runs: a local process now, a Kubernetes Job later.

    Attributes:
        name: registry name, e.g. "local".
    """

    name: str

    def submit(self, job_id: str, argv: list[str], env: dict[str, str], log_path: str) -> ExecutionHandle:
        """Start `argv` (a python -m command) for the job, with the service's environment plus
        `env`; stdout and stderr are appended to the file `log_path`. Returns at once."""


# --- Storage ------------------------------------------------------------------------------
@runtime_checkable
class Storage(Protocol):
    """Shared storage, as services and workers use it (tunesmith.core.storage.LocalStorage).

    Keys are relative POSIX paths ("records/jobs/x.json"); a bad key (absolute, "..", ...)
    raises StorageKeyError (an InvalidArgument). Every write is atomic: readers see the old or
    the new content, never part of it. Artifacts are immutable, content-addressed folders.
    Reading a missing key raises NotFound.

    Attributes:
        root: the root as a local folder; what a worker process is handed to open the same
            storage with open_storage().
        root_uri: the root as a URI ("file:///...").
    """

    root: Path
    root_uri: str

    # -- keys, URIs and local paths
    def uri(self, key: str) -> str:
        """A URI naming `key` in this storage (key_of(uri(k)) == k)."""

    def key_of(self, uri: str) -> str:
        """The key of a URI this storage hands out (an Artifact's uri, or uri(key));
        InvalidArgument(field="uri") for anything else."""

    def path(self, key: str) -> Path:
        """A local path for `key` (for files a worker or a library reads or writes directly)."""

    def local_path(self, uri: str) -> Path:
        """The local path of `uri` (it need not exist)."""

    def resolve(self, uri: str) -> Path:
        """A readable local folder holding the stored artifact `uri`; NotFound when it is not
        stored. Treat it as read-only."""

    def staging_dir(self) -> ContextManager[Path]:
        """A context manager giving a fresh private local folder, removed on exit; put_artifact
        can move it in."""

    # -- small files and records
    def exists(self, key: str) -> bool:
        """Whether something is stored at `key`."""

    def write_bytes(self, key: str, data: bytes) -> None:
        """Atomically create or replace the file at `key`."""

    def read_bytes(self, key: str) -> bytes:
        """The file at `key`; NotFound when there is none."""

    def write_json(self, key: str, obj: Any) -> None:
        """write_bytes of `obj` as JSON."""

    def read_json(self, key: str) -> Any:
        """read_bytes parsed as JSON."""

    def append_line(self, key: str, line: str) -> None:
        """Append `line` plus a newline to the file at `key` (created if missing); lines from
        several writers never interleave."""

    def list(self, prefix: str) -> list[str]:
        """Sorted keys directly inside folder `prefix`; [] when there is no such folder."""

    def delete(self, key: str) -> None:
        """Remove the file or folder at `key`; nothing stored there is not an error."""

    # -- artifacts
    def put_artifact(self, kind: str, source: Any, *, move: bool = False) -> Artifact:
        """Store the local file or folder `source` as an immutable artifact of `kind` and return
        its reference (uri, sha256, kind, size_bytes). Equal content gives an equal reference.
        move=True may move `source` (e.g. a staging_dir()) instead of copying it."""

    def artifact(self, uri: str) -> Artifact:
        """The reference of the stored artifact at `uri`; NotFound when there is none."""

    def verify(self, ref: Artifact) -> bool:
        """True when the artifact at ref.uri exists and its content hashes to ref.sha256."""

    def clean_staging(self, older_than_seconds: float = 3600) -> int:
        """Remove staging leftovers of killed writers older than that; returns how many."""


@runtime_checkable
class StorageBackendFactory(Protocol):
    """Builds the storage for a root of its scheme (file, s3, ...); a class with a `scheme`
    class attribute qualifies.

    Attributes:
        scheme: the URI scheme it serves ("file").
    """

    scheme: str

    def __call__(self, root: str) -> Storage:
        """Return the Storage for `root` (a URI of this scheme, or a plain path for "file")."""


# --- checking an object against a Protocol ------------------------------------------------
_PROTOCOL_BASES = {"Protocol", "Generic", "object"}
#: Dunder methods that count as Protocol members (iteration, calling).
_DUNDER_MEMBERS = {"__call__", "__iter__", "__next__"}


def protocol_members(protocol: type) -> list[tuple[str, Any]]:
    """(name, declaration) of every member `protocol` declares, in declaration order: an
    attribute's declaration is its annotation (a string), a method's is the function."""
    members: dict[str, Any] = {}
    for cls in reversed(protocol.__mro__):
        if cls.__name__ in _PROTOCOL_BASES and cls.__module__ in ("typing", "builtins"):
            continue
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            members[name] = annotation
        for name, value in cls.__dict__.items():
            if name.startswith("__") and name not in _DUNDER_MEMBERS:
                continue
            if name.startswith("_") and not name.startswith("__"):
                continue
            if callable(value) or isinstance(value, property):
                members[name] = value
    return list(members.items())


def _signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):  # builtins and some C types have none
        return None


def _call_shapes(declared: Any) -> list[tuple[list[str], list[str]]]:
    """How callers may call the declared method: (positional names, keyword names) for the
    fullest call (every positional parameter positionally, every keyword-only one by name) and
    for the shortest (required positionals only)."""
    sig = inspect.signature(declared)
    params = list(sig.parameters.values())[1:]  # drop self
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in params
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    keywords = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    return [(positional, keywords), (required, [])]


def _accepts(sig: inspect.Signature, positional: list[str], keywords: list[str]) -> bool:
    try:
        sig.bind(*[None] * len(positional), **{k: None for k in keywords})
    except TypeError:
        return False
    return True


def _declared_call(name: str, declared: Any) -> str:
    """'load(model_path, *, dtype, max_model_len, enable_adapters)': how the Protocol calls it."""
    positional, keywords = _call_shapes(declared)[0]
    args = positional + ([f"*, {', '.join(keywords)}"] if keywords else [])
    return f"{name}({', '.join(args)})"


def protocol_problems(obj: Any, protocol: type) -> tuple[list[str], list[str]]:
    """(missing, mismatched) for `obj` against `protocol`.

    missing: members `obj` lacks (attributes and methods, declaration order). mismatched: one
    line per method that is not callable or cannot be called the way the Protocol declares (its
    positional arguments, and its keyword-only arguments by name), and per str/bool attribute
    holding another type. isinstance() on a runtime_checkable Protocol only checks presence.
    """
    missing: list[str] = []
    mismatched: list[str] = []
    for name, declared in protocol_members(protocol):
        if name == "__call__":
            if not callable(obj):
                missing.append(name)
                continue
            sig = _signature(obj)
            if sig is not None and not all(_accepts(sig, p, k) for p, k in _call_shapes(declared)):
                mismatched.append(f"__call__ does not accept {_declared_call('', declared)}")
            continue
        try:
            value = getattr(obj, name)
        except AttributeError:
            missing.append(name)
            continue
        except Exception:  # a property that fails is there; its behaviour is for the contract tests
            continue
        if isinstance(declared, str):  # an annotated attribute
            expected = {"str": str, "bool": bool}.get(declared)
            if expected is not None and not isinstance(value, expected):
                mismatched.append(f"{name} is {type(value).__name__}, not {declared}")
            continue
        if isinstance(declared, property):
            continue
        if not callable(value):
            mismatched.append(f"{name} is not callable")
            continue
        sig = _signature(value)
        if sig is not None and not all(_accepts(sig, p, k) for p, k in _call_shapes(declared)):
            mismatched.append(f"{name} does not accept {_declared_call(name, declared)}")
    return missing, mismatched


def conformance_errors(obj: Any, protocol: type) -> list[str]:
    """protocol_problems as messages: 'lacks a, b' first, then each mismatch; [] when `obj`
    conforms."""
    missing, mismatched = protocol_problems(obj, protocol)
    return ([f"lacks {', '.join(missing)}"] if missing else []) + mismatched
