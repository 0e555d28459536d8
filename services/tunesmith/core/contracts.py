"""The shapes plugins provide. Hooks in tunesmith.core.hookspecs register objects of these kinds.

These are structural Protocols: a plugin need not import or subclass them. Everything heavy
(torch, transformers, peft, vllm) is imported inside the methods, never at module import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable


# --- PEFT methods -------------------------------------------------------------------------
@runtime_checkable
class PeftMethod(Protocol):
    """A fine-tuning method (LoRA, QLoRA, DoRA, IA3, full, ...).

    Attributes:
        name: registry name, e.g. "lora".
        supports_merge: the adapter can be merged into the base weights.
        quantized_base: the base is loaded quantised (QLoRA); load_kwargs says how.
    """

    name: str
    supports_merge: bool
    quantized_base: bool

    def load_kwargs(self, options: dict[str, Any], device: str) -> dict[str, Any]:
        """Extra kwargs for AutoModelForCausalLM.from_pretrained (e.g. quantization_config)."""

    def apply(self, model: Any, options: dict[str, Any]) -> Any:
        """Return the model made trainable for this method (e.g. a peft PeftModel).

        `options` holds rank, alpha, dropout, target_modules and method-specific keys.
        """


# --- Prompt templates ---------------------------------------------------------------------
@dataclass(frozen=True)
class RenderedExample:
    """One example after templating. The trainer appends EOS to `completion`."""

    prompt: str
    completion: str


@runtime_checkable
class PromptTemplate(Protocol):
    """Turns canonical fields (input, output, instruction, messages, ...) into prompt+completion.

    `tokenizer` is given when the template needs the model's own chat template; templates that
    do not need it must accept None.
    """

    name: str
    description: str

    def render(self, fields: dict[str, Any], options: dict[str, Any], tokenizer: Any | None) -> RenderedExample:
        """Render one row. Raise KeyError(field) or ValueError for a row it cannot render."""


# --- Benchmarks ---------------------------------------------------------------------------
@dataclass
class BenchmarkResult:
    """metrics: name -> value in [0, 1] unless documented; per_row: correctness per row or None."""

    metrics: dict[str, float]
    per_row: list[bool] | None = None


@runtime_checkable
class Benchmark(Protocol):
    """Scores generated answers against references."""

    name: str
    description: str

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> BenchmarkResult:
        """Score aligned predictions and references (equal lengths)."""


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


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "cancelled"


# A prompt is either raw completion text or a chat: a list of {"role", "content"} dicts.
PromptInput = str | list[dict[str, str]]


@runtime_checkable
class LoadedModel(Protocol):
    """A model loaded by an inference backend."""

    backend: str

    def generate(self, prompts: Sequence[PromptInput], sampling: Sampling) -> list[Generation]:
        """Generate for all prompts as one batch (or the engine's own batching)."""

    def stream(self, prompt: PromptInput, sampling: Sampling) -> Iterator[str]:
        """Yield text deltas for one prompt; closing the iterator cancels generation."""

    def close(self) -> None:
        """Free the model's memory."""


@runtime_checkable
class InferenceBackend(Protocol):
    """An engine that loads models from local folders (vllm, transformers)."""

    name: str

    def available(self) -> tuple[bool, str]:
        """(usable here?, reason). Must be cheap: no model load, no heavy import if avoidable."""

    def load(self, model_path: str, *, dtype: str = "", max_model_len: int = 0, enable_adapters: bool = False) -> LoadedModel:
        """Load the model in folder `model_path`."""


# --- Training executors -------------------------------------------------------------------
@runtime_checkable
class ExecutionHandle(Protocol):
    def poll(self) -> int | None:
        """Exit code, or None while running."""

    def cancel(self) -> None:
        """Ask the work to stop (SIGTERM or equivalent)."""

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the exit code (None on timeout)."""


@runtime_checkable
class TrainingExecutor(Protocol):
    """Where a training job runs: a local process now, a Kubernetes Job later."""

    name: str

    def submit(self, job_id: str, argv: list[str], env: dict[str, str], log_path: str) -> ExecutionHandle:
        """Start `argv` (a python -m command) for the job; stdout/stderr go to log_path."""


# --- Storage backends ---------------------------------------------------------------------
@runtime_checkable
class StorageBackendFactory(Protocol):
    """Builds the storage for a root URI of its scheme (file, s3, ...)."""

    scheme: str

    def __call__(self, root: str) -> Any:
        """Return a tunesmith.core.storage.Storage-compatible object for `root`."""
