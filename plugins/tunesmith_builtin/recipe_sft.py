"""Built-in training recipe "sft": supervised fine-tuning on prompt/completion rows.

setup: tokenise rows once (tunesmith.trainer.sft.encode_rows): the prompt as the data service
rendered it (the model's chat template for chat data, so completion-only loss is the
assistant-only loss of the final assistant turn), the completion plus EOS, whose tokens carry
the labels (or every token with completion_only_loss false).
train step: summed cross-entropy over label tokens (tunesmith.trainer.sft.LossComputer), on
length-grouped left-padded batches, or, with hyperparameters.packing, on packed rows of up to
max_seq_length tokens with restarting positions and a block-diagonal mask
(tunesmith.trainer.packing). Prompt-learning methods get right-padded batches and no packing.
evaluate: mean validation loss per label token.
No options of its own.
"""
from __future__ import annotations

from typing import Any, Sequence

from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import hookimpl


class SftRecipe:
    name = "sft"
    description = "Supervised fine-tuning: cross-entropy on completion tokens (optionally packed rows)."
    objective = "sft"
    row_fields = ("prompt", "completion")
    supports_packing = True

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options:
            key = sorted(options)[0]
            raise InvalidArgument(f"the sft recipe has no option {key!r}", field=key)
        return {}

    def setup(self, context, train_rows: Sequence[dict], validation_rows: Sequence[dict]) -> dict[str, Any]:
        from tunesmith.trainer.sft import LossComputer, encode_rows

        h = context.hyperparameters
        self.h = h
        self.device = context.device
        self.pad_id = context.tokenizer.pad_token_id
        self.prompt_learning = bool(context.method.prompt_learning)
        if h["packing"] and self.prompt_learning:
            raise InvalidArgument(f"{context.method.name} adds virtual tokens, which packed rows cannot carry; "
                                  "turn packing off", field="hyperparameters.packing")
        self.padding_side = "right" if self.prompt_learning else "left"
        self.train_ex = encode_rows(context.tokenizer, train_rows, h["max_seq_length"], h["completion_only_loss"])
        self.val_ex = encode_rows(context.tokenizer, validation_rows, h["max_seq_length"], True)
        self.loss_fn = LossComputer(context.model, prompt_learning=self.prompt_learning)
        order = sorted(range(len(self.val_ex)), key=lambda i: len(self.val_ex[i].input_ids))
        val_bs = h["batch_size"] * 2
        self.val_batches = [order[i:i + val_bs] for i in range(0, len(order), val_bs)]
        truncated = sum(e.truncated for e in self.train_ex) + sum(e.truncated for e in self.val_ex)
        return {"train_examples": len(self.train_ex), "truncated_rows": truncated}

    def train_batches(self, epoch: int, seed: int) -> list[dict[str, Any]]:
        from tunesmith.trainer.sft import length_grouped_batches

        items = self._label_count
        if self.h["packing"]:
            from tunesmith.trainer.packing import pack_examples

            rows = pack_examples(self.train_ex, self.h["max_seq_length"], seed + epoch)
            # As many packed rows per batch as hold about batch_size examples, so a step carries
            # the tokens it would unpacked (and the LR schedule sees the same number of steps).
            per_batch = max(1, round(self.h["batch_size"] * len(rows) / max(1, len(self.train_ex))))
            out = []
            for i in range(0, len(rows), per_batch):
                chunk = rows[i:i + per_batch]
                idx = [j for r in chunk for j in r]
                out.append({"packed_rows": chunk, "n_tokens": sum(len(self.train_ex[j].input_ids) for j in idx),
                            "n_items": sum(items(self.train_ex[j]) for j in idx)})
            return out
        lengths = [len(e.input_ids) for e in self.train_ex]
        return [{"examples": b, "n_items": sum(items(self.train_ex[i]) for i in b),
                 "n_tokens": sum(lengths[i] for i in b)}
                for b in length_grouped_batches(lengths, self.h["batch_size"], seed + epoch)]

    @staticmethod
    def _label_count(e) -> int:
        """Labels that count after the shift (a row's first position predicts nothing)."""
        from tunesmith.trainer.sft import IGNORE_INDEX

        return sum(1 for x in e.labels[1:] if x != IGNORE_INDEX)

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        from tunesmith.trainer.sft import collate

        if "packed_rows" in batch:
            from tunesmith.trainer.packing import collate_packed, packed_loss_sum

            loss_sum, _ = packed_loss_sum(model, collate_packed(self.train_ex, batch["packed_rows"], self.pad_id),
                                          self.device)
        else:
            loss_sum, _ = self.loss_fn(model, collate([self.train_ex[i] for i in batch["examples"]], self.pad_id,
                                                      self.padding_side), self.device)
        return loss_sum, {}

    def evaluate(self, model: Any) -> dict[str, float]:
        from tunesmith.trainer.sft import collate

        if not self.val_batches:
            return {}
        total, count = 0.0, 0
        for idx in self.val_batches:
            s, n = self.loss_fn(model, collate([self.val_ex[i] for i in idx], self.pad_id, self.padding_side),
                                self.device)
            total += float(s)
            count += n
        return {"loss": total / max(1, count)}


@hookimpl
def register_training_recipes(register):
    register("sft", SftRecipe())
