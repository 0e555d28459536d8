"""Built-in training recipe "dpo": Direct Preference Optimization on preference pairs.

Rows: the data service's prepared preference rows (schema "preference"): prompt, completion (the
rendered chosen answer) and rejected (the rendered rejected answer).

setup: the chosen and the rejected answer are tokenised as completions of the same prompt
(tunesmith.trainer.sft.encode_rows, completion-only labels whatever
hyperparameters.completion_only_loss says: DPO compares completion log-probabilities).
train step: ONE forward over the 2B rows of B pairs (chosen rows, then rejected rows; left padded
with position ids, logits only for the labelled tail, like the SFT loss; prompt-learning methods:
right padded, full logits, virtual-token logits dropped), giving each answer's log-probability
summed over its tokens (tunesmith.trainer.sft.completion_logprobs). With logits
    z = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
the per-pair losses are TRL's (trl.DPOTrainer):
    sigmoid: -logsigmoid(beta * z)       (DPO, the default)
    ipo:     (z - 1 / (2 * beta)) ** 2   (IPO; as in TRL, every log-prob is first divided by its
                                          answer's token count, rewards included)
    hinge:   relu(1 - beta * z)          (SLiC)
loss() returns their sum (the loop divides by n_items = pairs).
evaluate: on the validation pairs: "loss" (mean per pair), "rewards/chosen" (mean
beta * (policy_chosen - ref_chosen)), "rewards/rejected", "rewards/margins" (mean chosen -
rejected reward) and "rewards/accuracies" (fraction of pairs whose chosen reward is strictly
higher, as TRL counts it: at step 0, when policy == reference, every reward is 0 and the
accuracy is 0.0, not 0.5).

The reference model:
- reference_policy "frozen_base" (default), a method with an adapter (artifact_kind "adapter":
  LoRA, QLoRA, IA3, prefix/prompt tuning): the policy with its adapter switched off (peft's
  ``model.disable_adapter()``, under torch.no_grad) — the frozen base itself, no second copy in
  memory; one more forward (without grad) per micro-batch.
- "frozen_base" with a method that has no adapter to switch off (artifact_kind "model": full
  fine-tuning): the reference is the initial model, so setup() computes the reference
  log-probabilities of every train and validation pair once with it, before any step (no copy
  of the model either; they are kept as two floats per pair). The model's training mode is
  restored afterwards.
- "separate_model": reference_model is a local Hugging Face model folder (same tokenizer as the
  base); setup() loads it frozen, computes every pair's reference log-probabilities once the same
  way, and frees it, so it is not held in memory while training.

Options: beta (number > 0, default 0.1), loss_type ("sigmoid", "ipo", "hinge"),
reference_policy ("frozen_base", "separate_model"), reference_model (a folder path, required by
and only allowed with "separate_model"; whether the folder exists is checked by setup(), on the
machine that trains). Unknown keys are refused: InvalidArgument(field=<key>).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import hookimpl

LOSS_TYPES = ("sigmoid", "ipo", "hinge")
REFERENCE_POLICIES = ("frozen_base", "separate_model")
DEFAULTS: dict[str, Any] = {"beta": 0.1, "loss_type": "sigmoid", "reference_policy": "frozen_base",
                            "reference_model": ""}
REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


def _unwrap(model: Any) -> Any:
    """The model under a DDP wrapper (the loop passes the wrapped one to loss())."""
    return getattr(model, "module", model)


class DpoRecipe:
    name = "dpo"
    description = "Direct Preference Optimization on prompt/chosen/rejected pairs (sigmoid, IPO or hinge loss)."
    objective = "dpo"
    row_fields = ("prompt", "completion", "rejected")
    supports_packing = False

    # --- options --------------------------------------------------------------------------
    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        options = dict(options or {})
        for key in sorted(options):
            if key not in DEFAULTS:
                raise InvalidArgument(f"the dpo recipe has no option {key!r} (options: {', '.join(DEFAULTS)})",
                                      field=key)
        out = dict(DEFAULTS)
        out.update({k: v for k, v in options.items() if v is not None})
        beta = out["beta"]
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
            raise InvalidArgument(f"beta must be a number > 0, got {beta!r}", field="beta")
        out["beta"] = float(beta)
        for key, choices in (("loss_type", LOSS_TYPES), ("reference_policy", REFERENCE_POLICIES)):
            value = out[key]
            if not isinstance(value, str) or value.strip().lower() not in choices:
                raise InvalidArgument(f"{key} must be one of {', '.join(choices)}, got {value!r}", field=key)
            out[key] = value.strip().lower()
        ref = out["reference_model"]
        if not isinstance(ref, str):
            raise InvalidArgument(f"reference_model must be a model folder path, got {type(ref).__name__}",
                                  field="reference_model")
        if out["reference_policy"] == "separate_model" and not ref.strip():
            raise InvalidArgument("reference_policy separate_model needs reference_model (a model folder)",
                                  field="reference_model")
        if out["reference_policy"] != "separate_model" and ref:
            raise InvalidArgument("reference_model is only used with reference_policy separate_model",
                                  field="reference_model")
        return out

    # --- setup ----------------------------------------------------------------------------
    def setup(self, context, train_rows: Sequence[dict], validation_rows: Sequence[dict]) -> dict[str, Any]:
        from tunesmith.trainer.sft import LossComputer, encode_rows

        h = context.hyperparameters
        o = self.validate_options(context.options or {})  # idempotent on validated options
        self.h, self.o = h, o
        self.beta, self.loss_type = float(o["beta"]), o["loss_type"]
        self.device = context.device
        pad = context.tokenizer.pad_token_id
        self.pad_id = context.tokenizer.eos_token_id if pad is None else pad
        self.prompt_learning = bool(context.method.prompt_learning)
        self.padding_side = "right" if self.prompt_learning else "left"
        self.computer = LossComputer(context.model, prompt_learning=self.prompt_learning)
        tok, max_len = context.tokenizer, h["max_seq_length"]

        def encode(rows: Sequence[dict]):
            rows = list(rows)
            chosen = encode_rows(tok, [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows],
                                 max_len, True)
            rejected = encode_rows(tok, [{"prompt": r["prompt"], "completion": r["rejected"]} for r in rows],
                                   max_len, True)
            return chosen, rejected

        self.pairs = {"train": encode(train_rows), "validation": encode(validation_rows)}
        val_n = len(self.pairs["validation"][0])
        order = sorted(range(val_n), key=lambda i: self._pair_length("validation", i))
        self.val_bs = max(1, h["batch_size"])
        self.val_batches = [order[i:i + self.val_bs] for i in range(0, val_n, self.val_bs)]

        # The reference: the adapter switched off on the fly, or log-probs computed once here.
        self.reference: dict[str, Any] | None = None  # split -> (chosen [n], rejected [n]) on the CPU
        if o["reference_policy"] == "separate_model":
            self.reference_mode = "separate_model"
            self.reference = self._precompute_separate(context, o["reference_model"])
        elif context.method.artifact_kind == "model" or not hasattr(_unwrap(context.model), "disable_adapter"):
            self.reference_mode = "initial_model"
            self.reference = self._precompute(context.model, self.computer)
        else:
            self.reference_mode = "disabled_adapter"
        context.log(f"dpo: {len(self.pairs['train'][0])} training pairs, {val_n} validation pairs, "
                    f"loss {self.loss_type}, beta {self.beta:g}, reference: {self._describe_reference()}")
        truncated = sum(c.truncated or r.truncated for c_side, r_side in self.pairs.values()
                        for c, r in zip(c_side, r_side))  # pairs with either answer cut
        return {"train_examples": len(self.pairs["train"][0]), "truncated_rows": truncated,
                "validation_pairs": val_n, "reference": self.reference_mode}

    def _describe_reference(self) -> str:
        return {"disabled_adapter": "the base with the adapter disabled",
                "initial_model": "the initial model (log-probs precomputed)",
                "separate_model": f"{self.o['reference_model']} (log-probs precomputed)"}[self.reference_mode]

    def _pair_length(self, split: str, i: int) -> int:
        c, r = self.pairs[split]
        return max(len(c[i].input_ids), len(r[i].input_ids))

    def _collate(self, split: str, idx: Sequence[int]) -> dict[str, Any]:
        """The 2B rows of pairs `idx`: the chosen answers, then the rejected ones."""
        from tunesmith.trainer.sft import collate

        c, r = self.pairs[split]
        return collate([c[i] for i in idx] + [r[i] for i in idx], self.pad_id, self.padding_side)

    def _precompute(self, model: Any, computer: Any) -> dict[str, Any]:
        """Every pair's (chosen, rejected) summed log-probs under `model` as it is now."""
        import torch

        model = _unwrap(model)
        was_training = model.training
        model.eval()
        out = {}
        try:
            with torch.no_grad():
                for split, (c, _) in self.pairs.items():
                    n = len(c)
                    chosen, rejected = torch.zeros(n), torch.zeros(n)
                    order = sorted(range(n), key=lambda i: self._pair_length(split, i))
                    for s in range(0, n, self.val_bs):
                        idx = order[s:s + self.val_bs]
                        logps = self._logps(model, computer, self._collate(split, idx))[0].float().cpu()
                        chosen[idx] = logps[:len(idx)]
                        rejected[idx] = logps[len(idx):]
                    out[split] = (chosen, rejected)
        finally:
            model.train(was_training)
        return out

    def _precompute_separate(self, context, folder: str) -> dict[str, Any]:
        import gc
        from pathlib import Path

        import torch
        from transformers import AutoModelForCausalLM

        from tunesmith.core.errors import NotFound
        from tunesmith.trainer.sft import LossComputer

        if not (Path(folder) / "config.json").is_file():
            raise NotFound(f"reference_model {folder!r} is not a model folder (no config.json)",
                           field="reference_model")
        base = _unwrap(context.model)
        base = base.get_base_model() if hasattr(base, "get_base_model") else base
        dtype = next(base.parameters()).dtype
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):  # a quantised base
            dtype = torch.bfloat16 if context.device.startswith("cuda") else torch.float32
        ref = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(context.device)
        if ref.config.vocab_size != base.config.vocab_size:
            raise InvalidArgument(f"reference_model {folder!r} has a vocabulary of {ref.config.vocab_size} tokens, "
                                  f"the base {base.config.vocab_size}: it must share the base's tokenizer",
                                  field="reference_model")
        ref.requires_grad_(False)
        ref.config.use_cache = False
        try:
            # A plain causal LM: left padding works for it, but the rows are padded for the policy.
            return self._precompute(ref, LossComputer(ref, prompt_learning=self.prompt_learning))
        finally:
            del ref
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # --- log-probs and the loss -------------------------------------------------------------
    def _logps(self, model: Any, computer: Any, batch: dict) -> tuple[Any, Any]:
        """(summed completion log-probs, completion token counts) per row of `batch`."""
        from tunesmith.trainer.sft import completion_logprobs

        return completion_logprobs(computer, model, batch, self.device)

    def pair_logprobs(self, model: Any, split: str, idx: Sequence[int], batch: dict | None = None) -> dict[str, Any]:
        """Summed completion log-probs of pairs `idx` of `split` ("train" or "validation"):
        policy_chosen, policy_rejected (with grad if enabled), ref_chosen, ref_rejected (no grad)
        and chosen_tokens, rejected_tokens; tensors of shape [len(idx)] on the device."""
        import torch

        n = len(idx)
        batch = batch if batch is not None else self._collate(split, idx)
        if self.reference is None:
            # Before the policy's forward: peft's disable_adapter() flips the adapter weights'
            # requires_grad off and on again, which must not happen under a recorded graph.
            with torch.no_grad(), _unwrap(model).disable_adapter():
                ref, _ = self._logps(_unwrap(model), self.computer, batch)
            ref_c, ref_r = ref[:n], ref[n:]
        logps, counts = self._logps(model, self.computer, batch)
        if self.reference is not None:
            c, r = self.reference[split]
            index = torch.tensor(list(idx), dtype=torch.long)
            ref_c, ref_r = c[index].to(logps.device), r[index].to(logps.device)
        return {"policy_chosen": logps[:n], "policy_rejected": logps[n:], "ref_chosen": ref_c,
                "ref_rejected": ref_r, "chosen_tokens": counts[:n], "rejected_tokens": counts[n:]}

    def pair_losses(self, lp: dict[str, Any]) -> tuple[Any, Any, Any]:
        """(per-pair losses, chosen rewards, rejected rewards) from pair_logprobs()."""
        import torch.nn.functional as F

        pc, pr, rc, rr = lp["policy_chosen"], lp["policy_rejected"], lp["ref_chosen"], lp["ref_rejected"]
        if self.loss_type == "ipo":
            nc, nr = lp["chosen_tokens"].clamp_min(1), lp["rejected_tokens"].clamp_min(1)
            pc, rc, pr, rr = pc / nc, rc / nc, pr / nr, rr / nr
        z = (pc - rc) - (pr - rr)
        if self.loss_type == "sigmoid":
            losses = -F.logsigmoid(self.beta * z)
        elif self.loss_type == "ipo":
            losses = (z - 1.0 / (2.0 * self.beta)) ** 2
        else:  # hinge
            losses = F.relu(1.0 - self.beta * z)
        return losses, self.beta * (pc - rc).detach(), self.beta * (pr - rr).detach()

    @staticmethod
    def _reward_metrics(chosen, rejected) -> dict[str, float]:
        return {"rewards/chosen": float(chosen.mean()), "rewards/rejected": float(rejected.mean()),
                "rewards/accuracies": float((chosen > rejected).float().mean()),
                "rewards/margins": float((chosen - rejected).mean())}

    # --- the recipe calls -------------------------------------------------------------------
    def train_batches(self, epoch: int, seed: int) -> list[dict[str, Any]]:
        from tunesmith.trainer.sft import length_grouped_batches

        c, r = self.pairs["train"]
        lengths = [self._pair_length("train", i) for i in range(len(c))]
        return [{"pairs": b, "n_items": len(b),
                 "n_tokens": sum(len(c[i].input_ids) + len(r[i].input_ids) for i in b)}
                for b in length_grouped_batches(lengths, self.h["batch_size"], seed + epoch)]

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        lp = self.pair_logprobs(model, "train", batch["pairs"])
        losses, chosen, rejected = self.pair_losses(lp)
        return losses.sum(), self._reward_metrics(chosen, rejected)

    def evaluate(self, model: Any) -> dict[str, float]:
        import torch

        if not self.val_batches:
            return {}
        losses, chosen, rejected = [], [], []
        with torch.no_grad():
            for idx in self.val_batches:
                lo, ch, rj = self.pair_losses(self.pair_logprobs(model, "validation", idx))
                losses.append(lo.float().cpu())
                chosen.append(ch.float().cpu())
                rejected.append(rj.float().cpu())
        ch, rj = torch.cat(chosen), torch.cat(rejected)
        return {"loss": float(torch.cat(losses).mean()), **self._reward_metrics(ch, rj)}


@hookimpl
def register_training_recipes(register):
    register("dpo", DpoRecipe())
