"""The dataset preparation pipeline: pure functions, no gRPC and no storage.

The prepared folder it leads to (dataset.json + <split>.jsonl) is written and read by
tunesmith.core.formats.dataset, the one definition the trainer and evaluator read too.

    rows -> column mapping -> per-row validation -> label filter -> dedup -> template rendering
         -> seeded split (optionally stratified) -> per-split caps -> nested subsets -> statistics

Contracts:
- Rows are (row_number, {column: value}) as tunesmith.data.readers returns them.
- Validation collects every problem as {row, field, code, message}; `field` is the source column
  as it is named in the file. Error codes: missing_column (row 0, reported once), missing_field,
  empty_value, bad_type, bad_json, bad_value, template_error. If any row has an error, prepare()
  raises DataValidationError and returns nothing; its `.report` is the ValidationReport as a dict.
- Informational codes on success: duplicate (a row dropped by dedup) and too_long (a row longer
  than max_seq_length tokens; it will be truncated, counted in truncated_rows).
- Every random choice is a sort by sha256(seed, purpose, source row), so the result depends only
  on the rows and the seed: not on Python's hash seed, dict order or the random module.
- Stratified orders interleave labels so that every prefix keeps the label proportions (within
  one row per label); the validation split, the caps and the nested subsets are prefixes of
  such orders, which is what makes nested subsets nest.
- Preference rows (prompt, chosen, rejected) come in TRL's standard form (text) or its
  conversational form: the prompt a list of {role, content} messages (or a JSON string of one,
  e.g. in a CSV cell), each answer text or one assistant message. A chat-form prompt renders only
  with a template that needs a tokenizer ("chat"): the conversation plus each answer as the
  assistant's turn; it is kept normalised in the example's fields.
- Multiple-choice rows (question, choices, answer): choices a list of texts (or a JSON string of
  one, e.g. in a CSV cell), at least 2, non-empty and distinct (surrounding whitespace
  stripped); answer a 0-based index, a letter A-Z or the right choice's text
  (tunesmith.core.formats.dataset.choice_index). The prepared example carries `choices` and
  `gold` (the index) next to prompt and completion; its fields keep answer as the index.
- Token statistics (when a tokenizer is given) count the prompt as the trainer and the inference
  backends tokenize it (tunesmith.core.tokens.encode_prompts: the tokenizer's special tokens, but
  no second BOS for a prompt that already starts with one, e.g. a rendered chat template) and the
  completion plus the EOS the trainer appends.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields as dc_fields
from typing import Any, Iterable, Mapping

from tunesmith.core.contracts import PromptTemplate
from tunesmith.core.errors import DataValidationError, InvalidArgument
from tunesmith.core.formats.dataset import SCHEMA_NUMBERS, DatasetManifest, choice_index

MAX_ISSUES = 100

SCHEMAS: tuple[str, ...] = ("classification", "alpaca", "chat", "prompt_completion", "text", "preference",
                             "multiple_choice")

#: Canonical fields each schema needs.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "classification": ("input", "output"),
    "alpaca": ("instruction", "output"),
    "chat": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
    "preference": ("prompt", "chosen", "rejected"),
    "multiple_choice": ("question", "choices", "answer"),
}
#: Canonical fields each schema reads when present. "label" lets any schema stratify and filter.
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "classification": (),
    "alpaca": ("input", "label"),
    "chat": ("label",),
    "prompt_completion": ("label",),
    "text": ("label",),
    "preference": ("label",),
    "multiple_choice": ("label",),
}
#: The template a schema uses when the spec names none.
DEFAULT_TEMPLATES: dict[str, str] = {
    "classification": "classification",
    "alpaca": "alpaca",
    "chat": "chat",
    "prompt_completion": "plain",
    "text": "plain",
    "preference": "plain",
    "multiple_choice": "multiple_choice",
}
ERROR_CODES = frozenset(
    {"missing_column", "missing_field", "empty_value", "bad_type", "bad_json", "bad_value", "template_error"}
)
CHAT_ROLES = {
    "system": "system", "user": "user", "assistant": "assistant", "tool": "tool",
    # ShareGPT speakers
    "human": "user", "gpt": "assistant", "model": "assistant", "function": "tool", "observation": "tool",
}


def normalize_schema(value: str | int | None) -> str:
    """'classification', ... from a name, a proto enum name ('SCHEMA_ALPACA') or number."""
    if value is None:
        return "classification"
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in SCHEMA_NUMBERS:
            raise InvalidArgument(f"unknown schema number {value}", field="schema")
        return SCHEMA_NUMBERS[value] or "classification"
    name = str(value).strip().lower()
    if name.startswith("schema_"):
        name = name[len("schema_"):]
    if name in ("", "unspecified"):
        return "classification"
    if name not in SCHEMAS:
        raise InvalidArgument(f"unknown schema {value!r} (known: {', '.join(SCHEMAS)})", field="schema")
    return name


@dataclass
class PrepareSpec:
    """The parts of the proto DatasetSpec the pipeline uses (split fields flattened).

    template "" means the schema's default (DEFAULT_TEMPLATES: "classification" for the
    classification schema).
    """

    schema: str = "classification"
    column_mapping: dict[str, str] = field(default_factory=dict)
    template: str = ""
    template_options: dict[str, Any] = field(default_factory=dict)
    validation_fraction: float = 0.0
    validation_rows: int = 0
    seed: int = 0
    stratify: bool = False
    label_filter: list[str] = field(default_factory=list)
    max_train_rows: int = 0
    max_validation_rows: int = 0
    deduplicate: bool = False
    max_seq_length: int = 0
    nested_subset_sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.schema = normalize_schema(self.schema)
        self.column_mapping = dict(self.column_mapping or {})
        self.template = (self.template or "").strip()
        self.template_options = dict(self.template_options or {})
        self.label_filter = [str(x) for x in (self.label_filter or [])]
        self.nested_subset_sizes = [int(x) for x in (self.nested_subset_sizes or [])]
        for name in ("validation_rows", "seed", "max_train_rows", "max_validation_rows", "max_seq_length"):
            setattr(self, name, int(getattr(self, name) or 0))
        self.validation_fraction = float(self.validation_fraction or 0.0)

    @property
    def resolved_template(self) -> str:
        return self.template or DEFAULT_TEMPLATES[self.schema]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PrepareSpec":
        """From a flat dict (to_dict's shape); a nested "split" dict (the proto's SplitSpec) is
        flattened. Keys the pipeline does not use (name, format, tokenizer_model) are ignored."""
        flat = dict(d)
        split = flat.pop("split", None) or {}
        flat.update({k: v for k, v in split.items() if k in ("validation_fraction", "validation_rows", "seed", "stratify")})
        known = {f.name for f in dc_fields(cls)}
        return cls(**{k: v for k, v in flat.items() if k in known})

    def check(self) -> None:
        """InvalidArgument naming the first field that is out of range."""
        if not 0.0 <= self.validation_fraction <= 1.0:
            raise InvalidArgument(f"validation_fraction must be in [0, 1] (1 = hold out every row), "
                                  f"got {self.validation_fraction}",
                                  field="split.validation_fraction")
        for name in ("validation_rows", "max_train_rows", "max_validation_rows", "max_seq_length"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name} must not be negative, got {getattr(self, name)}", field=name)
        if any(n <= 0 for n in self.nested_subset_sizes):
            raise InvalidArgument(f"nested_subset_sizes must be positive, got {self.nested_subset_sizes}",
                                  field="nested_subset_sizes")
        allowed = set(REQUIRED_FIELDS[self.schema]) | set(OPTIONAL_FIELDS[self.schema])
        if self.schema == "chat":
            allowed.add("conversations")
        for canonical, column in self.column_mapping.items():
            if canonical not in allowed:
                raise InvalidArgument(
                    f"column_mapping names field {canonical!r}, which the {self.schema} schema does not have "
                    f"(fields: {', '.join(sorted(allowed))})", field="column_mapping")
            if not isinstance(column, str) or not column:
                raise InvalidArgument(f"column_mapping[{canonical!r}] must be a column name", field="column_mapping")


@dataclass
class PreparedDataset:
    """What prepare() returns. Example dicts: source_row, prompt, completion, label, fields
    (+ rejected for preference rows; + choices and gold for multiple_choice rows).
    statistics: split -> SplitStatistics-shaped dict."""

    source: str
    spec: PrepareSpec
    template: str
    splits: dict[str, list[dict[str, Any]]]
    report: dict[str, Any]
    labels: list[str]
    statistics: dict[str, dict[str, Any]]

    def split_rows(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.splits.items()}

    def manifest(self) -> DatasetManifest:
        """The prepared folder's dataset.json (written by tunesmith.core.formats.dataset)."""
        return DatasetManifest(splits=self.split_rows(), source=self.source, template=self.template,
                               labels=list(self.labels), spec=self.spec.to_dict(), report=self.report,
                               statistics=self.statistics)


# --- validation ---------------------------------------------------------------------------
def _issue(row: int, field_name: str, code: str, message: str) -> dict[str, Any]:
    return {"row": int(row), "field": field_name, "code": code, "message": message}


def _resolve_columns(spec: PrepareSpec, columns: list[str], issues: list[dict[str, Any]]) -> dict[str, str]:
    """canonical field -> source column for the fields this file provides; missing_column issues."""
    present = set(columns)
    available = ", ".join(columns) or "none"
    resolved: dict[str, str] = {}
    wanted = [(f, True) for f in REQUIRED_FIELDS[spec.schema]] + [(f, False) for f in OPTIONAL_FIELDS[spec.schema]]
    mapping = dict(spec.column_mapping)
    if spec.schema == "chat" and "conversations" in mapping and "messages" not in mapping:
        mapping["messages"] = mapping.pop("conversations")
    for canonical, required in wanted:
        if canonical in mapping:
            column = mapping[canonical]
            if column not in present:
                issues.append(_issue(0, column, "missing_column",
                                     f"column {column!r} (mapped to field {canonical!r}) is not in the file; "
                                     f"available columns: {available}"))
                continue
            resolved[canonical] = column
            continue
        column = canonical
        if column not in present and spec.schema == "chat" and canonical == "messages" and "conversations" in present:
            column = "conversations"  # ShareGPT
        if column in present:
            resolved[canonical] = column
        elif required:
            issues.append(_issue(0, canonical, "missing_column",
                                 f"the {spec.schema} schema needs field {canonical!r} but the file has no such column; "
                                 f"map one with column_mapping (available columns: {available})"))
    return resolved


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _text_value(value: Any) -> tuple[str | None, str | None, str]:
    """(text, error_code, message) for a text field value."""
    if value is None:
        return None, "empty_value", "empty value"
    if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
        return None, "bad_type", f"expected text, got {_type_name(value)}"
    if isinstance(value, float):
        if math.isnan(value):
            return None, "empty_value", "empty value"
        value = str(int(value)) if value.is_integer() else repr(value)
    elif not isinstance(value, str):
        if isinstance(value, int):
            value = str(value)
        else:
            return None, "bad_type", f"expected text, got {_type_name(value)}"
    if not value.strip():
        return None, "empty_value", "empty value"
    return value, None, ""


def _messages_value(value: Any, *, prompt: bool = False) -> tuple[list[dict[str, str]] | None, str | None, str]:
    """Normalise OpenAI or ShareGPT messages (a list or a JSON string) to [{role, content}].
    prompt: the messages before an answer (a preference row's chat-form prompt), so the last one
    must not be the assistant's."""
    if value is None:
        return None, "empty_value", "empty value"
    if isinstance(value, str):
        if not value.strip():
            return None, "empty_value", "empty value"
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            return None, "bad_json", f"messages are not valid JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(value, list):
        return None, "bad_type", f"expected a list of messages, got {_type_name(value)}"
    if not value:
        return None, "empty_value", "no messages"
    out: list[dict[str, str]] = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            return None, "bad_type", f"message {i} is {_type_name(m)}, not an object"
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if role is None or content is None:
            return None, "bad_type", f"message {i} needs 'role' and 'content' (or ShareGPT 'from' and 'value')"
        if not isinstance(role, str) or role.lower() not in CHAT_ROLES:
            return None, "bad_value", f"message {i} has unknown role {role!r} (known: {', '.join(sorted(CHAT_ROLES))})"
        if not isinstance(content, str):
            return None, "bad_type", f"message {i} content must be text, got {_type_name(content)}"
        if not content.strip():
            return None, "empty_value", f"message {i} has empty content"
        out.append({"role": CHAT_ROLES[role.lower()], "content": content})
    if prompt:
        if out[-1]["role"] == "assistant":
            return None, "bad_value", "a chat-form prompt must end before the answer, not with an assistant message"
        if not any(m["role"] == "user" for m in out):
            return None, "bad_value", "a chat-form prompt needs a user message"
        return out, None, ""
    if out[-1]["role"] != "assistant":
        return None, "bad_value", f"the last message must be the assistant's answer, got role {out[-1]['role']!r}"
    if len(out) < 2 or all(m["role"] == "system" for m in out[:-1]):
        return None, "bad_value", "a conversation needs a user message before the assistant's answer"
    return out, None, ""


def _preference_value(canonical: str, value: Any) -> tuple[Any, str | None, str]:
    """A preference row's prompt, chosen or rejected, in TRL's standard or conversational form:
    the prompt is text or a list of messages; an answer is text or one assistant message
    ({role, content}, alone or in a one-item list), normalised to its text. Messages may come as
    a JSON string (a CSV cell); text that merely looks like JSON stays text."""
    if canonical == "prompt":
        if isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]"):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = None  # text that merely looks like a list
            if isinstance(parsed, list) and parsed and all(isinstance(m, dict) for m in parsed):
                value = parsed
        if isinstance(value, list):
            return _messages_value(value, prompt=True)
        return _text_value(value)
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        one = parsed[0] if isinstance(parsed, list) and len(parsed) == 1 else parsed
        if isinstance(one, dict) and ("role" in one or "from" in one):
            value = one  # a message as a JSON string (a CSV cell); other JSON stays text
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict):
        role, content = value.get("role", value.get("from")), value.get("content", value.get("value"))
        if not isinstance(role, str) or CHAT_ROLES.get(role.lower()) != "assistant":
            return None, "bad_value", f"an answer given as a message must be the assistant's, got role {role!r}"
        return _text_value(content)
    if isinstance(value, list):
        return None, "bad_type", "expected the answer as text or one assistant message, got a list"
    return _text_value(value)


def _choices_value(value: Any) -> tuple[list[str] | None, str | None, str]:
    """A multiple-choice row's choices: a list of texts, or a JSON string of one (a CSV cell);
    at least 2, each non-empty text (numbers become text), distinct after stripping."""
    if value is None:
        return None, "empty_value", "empty value"
    if isinstance(value, str):
        if not value.strip():
            return None, "empty_value", "empty value"
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            return None, "bad_json", f"choices are not a valid JSON list: {exc.msg} (column {exc.colno})"
    if not isinstance(value, list):
        return None, "bad_type", f"expected a list of choices, got {_type_name(value)}"
    out: list[str] = []
    for i, choice in enumerate(value):
        text, code, message = _text_value(choice)
        if code:
            return None, code, f"choice {i}: {message}"
        out.append(text.strip())
    if len(out) < 2:
        return None, "bad_value", f"a multiple-choice row needs at least 2 choices, got {len(out)}"
    seen: dict[str, int] = {}
    for i, choice in enumerate(out):
        if choice in seen:
            return None, "bad_value", f"choices {seen[choice]} and {i} are the same text {choice!r}"
        seen[choice] = i
    return out, None, ""


def _answer_value(value: Any, choices: list[str]) -> tuple[int | None, str | None, str]:
    """A multiple-choice row's answer as the right choice's index (see choice_index)."""
    if value is None or (isinstance(value, str) and not value.strip()) or (
            isinstance(value, float) and math.isnan(value)):
        return None, "empty_value", "empty value"
    if isinstance(value, (list, tuple, dict, bool)):
        return None, "bad_type", f"expected an index, a letter or the choice text, got {_type_name(value)}"
    try:
        return choice_index(choices, value), None, ""
    except ValueError as exc:
        return None, "bad_value", str(exc)


def _validate_row(number: int, raw: dict[str, Any], spec: PrepareSpec, resolved: dict[str, str],
                  issues: list[dict[str, Any]]) -> dict[str, Any] | None:
    required = REQUIRED_FIELDS[spec.schema]
    out: dict[str, Any] = {}
    ok = True
    for canonical, column in resolved.items():
        is_required = canonical in required
        if column not in raw:
            if is_required:
                issues.append(_issue(number, column, "missing_field", f"missing (the row has no {column!r} key)"))
                ok = False
            continue
        value = raw[column]
        if canonical == "messages":
            parsed, code, message = _messages_value(value)
        elif spec.schema == "preference" and canonical in ("prompt", "chosen", "rejected"):
            parsed, code, message = _preference_value(canonical, value)
        elif spec.schema == "multiple_choice" and canonical == "choices":
            parsed, code, message = _choices_value(value)
        elif spec.schema == "multiple_choice" and canonical == "answer":
            out[canonical] = value  # checked against the choices below
            continue
        else:
            parsed, code, message = _text_value(value)
            if not is_required and code == "empty_value":
                continue  # an empty optional field is simply absent
        if code:
            issues.append(_issue(number, column, code, message))
            ok = False
            continue
        out[canonical] = parsed
    if spec.schema == "multiple_choice" and "answer" in out:
        if "choices" in out:
            index, code, message = _answer_value(out["answer"], out["choices"])
            if code:
                issues.append(_issue(number, resolved["answer"], code, message))
                ok = False
            else:
                out["answer"] = index
        else:  # the choices are already reported; the answer cannot be checked without them
            ok = False
    return out if ok else None


def _label(schema: str, fields: dict[str, Any]) -> str:
    return str(fields.get("output", "")) if schema == "classification" else str(fields.get("label", ""))


def _counts(issues: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in issues:
        counts[item["code"]] = counts.get(item["code"], 0) + 1
    return dict(sorted(counts.items()))


def _raise_invalid(source: str, rows_read: int, issues: list[dict[str, Any]]) -> None:
    errors = sorted((i for i in issues if i["code"] in ERROR_CODES), key=lambda i: i["row"])
    if not errors:
        return
    bad_rows = {i["row"] for i in errors if i["row"] > 0}
    column_errors = [i for i in errors if i["code"] == "missing_column"]
    rejected = rows_read if column_errors else len(bad_rows)
    first = errors[0]
    if column_errors:
        message = f"{source}: {first['message']}"
        if len(column_errors) > 1:
            message += f" ({len(column_errors) - 1} more missing columns)"
    else:
        message = (f"{source}: {rejected} of {rows_read} rows are invalid; "
                   f"first: row {first['row']}, field '{first['field']}': {first['message']}")
    report = {
        "source": source,
        "rows_read": rows_read,
        "rows_accepted": 0,
        "rows_rejected": rejected,
        "rows_filtered": 0,
        "rows_deduplicated": 0,
        "issues": errors[:MAX_ISSUES],
        "counts_by_code": _counts(errors),
    }
    raise DataValidationError(message, report=report)


def _columns_of(rows: list[tuple[int, dict[str, Any]]]) -> list[str]:
    seen: dict[str, None] = {}
    for _, raw in rows:
        seen.update(dict.fromkeys(raw))
    return list(seen)


def validate_rows(rows: list[tuple[int, dict[str, Any]]], spec: PrepareSpec, *, source: str,
                  columns: list[str] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """Map columns and validate every row: [(row, canonical fields)], or DataValidationError."""
    spec.check()
    issues: list[dict[str, Any]] = []
    resolved = _resolve_columns(spec, list(columns) if columns is not None else _columns_of(rows), issues)
    if issues:  # a missing column makes every row invalid; say so once
        _raise_invalid(source, len(rows), issues)
    valid: list[tuple[int, dict[str, Any]]] = []
    for number, raw in rows:
        if not isinstance(raw, dict):
            issues.append(_issue(number, "", "bad_type", f"row is {_type_name(raw)}, not an object"))
            continue
        fields = _validate_row(number, raw, spec, resolved, issues)
        if fields is not None:
            valid.append((number, fields))
    _raise_invalid(source, len(rows), issues)
    return valid


# --- rendering ----------------------------------------------------------------------------
def _template(spec: PrepareSpec, templates: Mapping[str, PromptTemplate], tokenizer: Any) -> PromptTemplate:
    name = spec.resolved_template
    if name not in templates:
        raise InvalidArgument(f"unknown template {name!r} (known: {', '.join(sorted(templates)) or 'none'})",
                              field="template")
    template = templates[name]
    try:
        template.validate_options(dict(spec.template_options))
    except InvalidArgument as exc:  # the template names the option key; the spec field is ours
        raise InvalidArgument(exc.message, field="template_options") from None
    if template.needs_tokenizer and tokenizer is None:
        raise InvalidArgument(f"template {name!r} renders the model's chat template and needs a tokenizer; "
                              f"set tokenizer_model", field="tokenizer_model")
    return template


def _render_one(template: PromptTemplate, fields: dict[str, Any], options: dict[str, Any],
                tokenizer: Any) -> tuple[str, str]:
    rendered = template.render(dict(fields), dict(options), tokenizer)
    if not isinstance(rendered.prompt, str) or not isinstance(rendered.completion, str):
        raise ValueError("template returned a non-text prompt or completion")
    return rendered.prompt, rendered.completion


def _render(valid: list[tuple[int, dict[str, Any]]], spec: PrepareSpec, template: PromptTemplate, tokenizer: Any,
            issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    name = spec.resolved_template
    for number, fields in valid:
        try:
            if spec.schema == "preference" and isinstance(fields.get("prompt"), list):
                # A chat-form prompt: the conversation, then each answer as the assistant's turn.
                if not template.needs_tokenizer:
                    raise ValueError("the prompt is a list of chat messages: render it with the 'chat' "
                                     "template (and a tokenizer_model)")
                chosen = {"messages": fields["prompt"] + [{"role": "assistant", "content": fields["chosen"]}]}
                rejected = {"messages": fields["prompt"] + [{"role": "assistant", "content": fields["rejected"]}]}
                prompt, completion = _render_one(template, chosen, spec.template_options, tokenizer)
                _, rejected_text = _render_one(template, rejected, spec.template_options, tokenizer)
            elif spec.schema == "preference":
                chosen = {**fields, "completion": fields["chosen"], "output": fields["chosen"]}
                rejected = {**fields, "completion": fields["rejected"], "output": fields["rejected"]}
                prompt, completion = _render_one(template, chosen, spec.template_options, tokenizer)
                _, rejected_text = _render_one(template, rejected, spec.template_options, tokenizer)
            else:
                prompt, completion = _render_one(template, fields, spec.template_options, tokenizer)
        except KeyError as exc:
            key = exc.args[0] if exc.args else "?"
            issues.append(_issue(number, str(key), "template_error",
                                 f"template {name!r} needs field {key!r}, which the row does not have"))
            continue
        except Exception as exc:  # a template's own error, reported against its row
            issues.append(_issue(number, "", "template_error", f"template {name!r} failed: {exc}"))
            continue
        example = {"source_row": number, "prompt": prompt, "completion": completion,
                   "label": _label(spec.schema, fields), "fields": fields}
        if spec.schema == "preference":
            example["rejected"] = rejected_text
        elif spec.schema == "multiple_choice":
            example["choices"] = list(fields["choices"])
            example["gold"] = int(fields["answer"])
        examples.append(example)
    return examples


def render_rows(rows: list[tuple[int, dict[str, Any]]], spec: PrepareSpec, *, source: str,
                templates: Mapping[str, PromptTemplate], tokenizer: Any = None,
                columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Validate and render rows in file order, nothing else (for previews and RenderTemplate)."""
    if columns is None:
        columns = getattr(rows, "columns", None)
    valid = validate_rows(rows, spec, source=source, columns=columns)
    template = _template(spec, templates, tokenizer)
    issues: list[dict[str, Any]] = []
    examples = _render(valid, spec, template, tokenizer, issues)
    _raise_invalid(source, len(rows), issues)
    return examples


# --- seeded orders ------------------------------------------------------------------------
def _rank(seed: int, purpose: str, key: Any) -> bytes:
    return hashlib.sha256(f"{seed}\x1f{purpose}\x1f{key}".encode("utf-8")).digest()


def seeded_order(examples: list[dict[str, Any]], seed: int, purpose: str, stratify: bool) -> list[dict[str, Any]]:
    """A deterministic permutation. Stratified: labels interleaved so every prefix keeps the
    label proportions (each label within one row of its share)."""
    if not stratify:
        return sorted(examples, key=lambda e: _rank(seed, purpose, e["source_row"]))
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in examples:
        groups.setdefault(e["label"], []).append(e)
    keyed: list[tuple[float, bytes, bytes, dict[str, Any]]] = []
    for label in sorted(groups):
        members = sorted(groups[label], key=lambda e: _rank(seed, purpose, e["source_row"]))
        tie = _rank(seed, purpose + ":label", label)
        size = len(members)
        for k, e in enumerate(members):
            keyed.append(((k + 0.5) / size, tie, _rank(seed, purpose, e["source_row"]), e))
    keyed.sort(key=lambda t: t[:3])
    return [t[3] for t in keyed]


def _validation_count(n: int, spec: PrepareSpec) -> int:
    if spec.validation_rows > 0:
        if spec.validation_rows >= n:
            raise InvalidArgument(f"validation_rows={spec.validation_rows} leaves no training rows "
                                  f"({n} rows after filtering)", field="split.validation_rows")
        return spec.validation_rows
    if spec.validation_fraction <= 0:
        return 0
    if spec.validation_fraction >= 1.0:
        return n  # an evaluation-only dataset: every row held out
    if n < 2:
        raise InvalidArgument(f"a validation split needs at least 2 rows, have {n}", field="split.validation_fraction")
    return min(max(int(n * spec.validation_fraction + 0.5), 1), n - 1)


# --- statistics ---------------------------------------------------------------------------
def _percentile(sorted_values: list[int], p: float) -> int:
    if not sorted_values:
        return 0
    index = max(math.ceil(p / 100.0 * len(sorted_values)) - 1, 0)
    return int(sorted_values[min(index, len(sorted_values) - 1)])


def length_statistics(values: list[int]) -> dict[str, Any]:
    """LengthStatistics-shaped: min, max, mean, p50, p95, p99 (nearest-rank percentiles)."""
    if not values:
        return {"min": 0, "max": 0, "mean": 0.0, "p50": 0, "p95": 0, "p99": 0}
    s = sorted(values)
    return {"min": s[0], "max": s[-1], "mean": round(sum(s) / len(s), 3),
            "p50": _percentile(s, 50), "p95": _percentile(s, 95), "p99": _percentile(s, 99)}


def _count_tokens(examples: list[dict[str, Any]], tokenizer: Any) -> dict[int, tuple[int, int]]:
    """source_row -> (prompt tokens, completion tokens incl. the EOS the trainer appends), with
    prompts tokenised by tunesmith.core.tokens (as the trainer and the inference backends do)."""
    from tunesmith.core.tokens import encode_completions, encode_prompts

    prompts = [len(x) for x in encode_prompts(tokenizer, [e["prompt"] for e in examples])]
    completions = [len(x) for x in encode_completions(tokenizer, [e["completion"] for e in examples])]
    eos = 1 if getattr(tokenizer, "eos_token_id", None) is not None else 0
    return {e["source_row"]: (p, c + eos) for e, p, c in zip(examples, prompts, completions)}


def _split_statistics(name: str, examples: list[dict[str, Any]], counts: dict[int, tuple[int, int]] | None,
                      max_seq_length: int) -> dict[str, Any]:
    labels: dict[str, int] = {}
    for e in examples:
        if e["label"]:
            labels[e["label"]] = labels.get(e["label"], 0) + 1
    stats: dict[str, Any] = {"split": name, "rows": len(examples), "label_counts": dict(sorted(labels.items()))}
    if counts is not None:
        prompt = [counts[e["source_row"]][0] for e in examples]
        completion = [counts[e["source_row"]][1] for e in examples]
        total = [p + c for p, c in zip(prompt, completion)]
        stats["prompt_tokens"] = length_statistics(prompt)
        stats["completion_tokens"] = length_statistics(completion)
        stats["total_tokens"] = length_statistics(total)
        stats["truncated_rows"] = sum(1 for t in total if max_seq_length and t > max_seq_length)
    return stats


# --- the pipeline -------------------------------------------------------------------------
def prepare(rows: list[tuple[int, dict[str, Any]]], spec: PrepareSpec, *, source: str,
            templates: Mapping[str, PromptTemplate], tokenizer: Any = None,
            columns: list[str] | None = None) -> PreparedDataset:
    """Run the whole pipeline; DataValidationError (nothing returned) if any row is invalid.

    `columns` is the file's header (readers.Table.columns); by default `rows.columns` when rows
    came from readers.read_rows, else the union of the rows' keys.
    """
    if columns is None:
        columns = getattr(rows, "columns", None)  # readers.read_rows carries the header
    rows_read = len(rows)
    if rows_read == 0:
        raise InvalidArgument(f"{source}: the file has no data rows", field="source")
    valid = validate_rows(rows, spec, source=source, columns=columns)
    template = _template(spec, templates, tokenizer)
    info: list[dict[str, Any]] = []

    # label filter
    rows_filtered = 0
    if spec.label_filter:
        present = {_label(spec.schema, f) for _, f in valid}
        unknown = [x for x in spec.label_filter if x not in present]
        if unknown:
            shown = ", ".join(sorted(p for p in present if p)[:20]) or "none"
            raise InvalidArgument(f"{source}: label_filter names labels that no row has: {', '.join(unknown)} "
                                  f"(labels include: {shown})", field="label_filter")
        keep = set(spec.label_filter)
        kept = [(n, f) for n, f in valid if _label(spec.schema, f) in keep]
        rows_filtered = len(valid) - len(kept)
        valid = kept

    # dedup: identical canonical fields (surrounding whitespace ignored); the first row stays
    rows_deduplicated = 0
    if spec.deduplicate:
        first_seen: dict[str, int] = {}
        kept = []
        for number, f in valid:
            key = json.dumps(_strip(f), sort_keys=True, ensure_ascii=False)
            if key in first_seen:
                info.append(_issue(number, "", "duplicate", f"duplicate of row {first_seen[key]}"))
                continue
            first_seen[key] = number
            kept.append((number, f))
        rows_deduplicated = len(valid) - len(kept)
        valid = kept

    # render
    errors: list[dict[str, Any]] = []
    pool = _render(valid, spec, template, tokenizer, errors)
    _raise_invalid(source, rows_read, errors)
    if not pool:
        raise InvalidArgument(f"{source}: no rows left after filtering ({rows_filtered} filtered, "
                              f"{rows_deduplicated} duplicates)", field="label_filter")

    labels = sorted({e["label"] for e in pool if e["label"]})
    if spec.stratify and not labels:
        raise InvalidArgument(f"stratify needs labels, and the {spec.schema} rows have none; "
                              f"map a 'label' column or turn stratify off", field="split.stratify")

    # split, caps, nested subsets
    n_val = _validation_count(len(pool), spec)
    order = seeded_order(pool, spec.seed, "split", spec.stratify)
    validation, train = order[:n_val], order[n_val:]
    train = seeded_order(train, spec.seed, "train", spec.stratify)
    validation = seeded_order(validation, spec.seed, "validation", spec.stratify)
    if spec.max_train_rows and len(train) > spec.max_train_rows:
        train = train[:spec.max_train_rows]
    if spec.max_validation_rows and len(validation) > spec.max_validation_rows:
        validation = validation[:spec.max_validation_rows]
    splits: dict[str, list[dict[str, Any]]] = {"train": train} if train or not validation else {}
    if validation:
        splits["validation"] = validation
    sizes = sorted(set(spec.nested_subset_sizes))
    if sizes and sizes[-1] > len(train):
        raise InvalidArgument(f"nested subset size {sizes[-1]} is larger than the train split ({len(train)} rows)",
                              field="nested_subset_sizes")
    if sizes:
        nested = seeded_order(train, spec.seed, "nested", spec.stratify)
        for n in sizes:
            splits[f"train_{n}"] = nested[:n]

    # statistics
    counts = None
    if tokenizer is not None:
        counts = _count_tokens(train + validation, tokenizer)
        if spec.max_seq_length:
            for e in sorted(train + validation, key=lambda e: e["source_row"]):
                p, c = counts[e["source_row"]]
                if p + c > spec.max_seq_length:
                    info.append(_issue(e["source_row"], "", "too_long",
                                       f"{p + c} tokens > max_seq_length {spec.max_seq_length}; will be truncated"))
    statistics = {name: _split_statistics(name, ex, counts, spec.max_seq_length) for name, ex in splits.items()}

    info.sort(key=lambda i: i["row"])
    report = {
        "source": source,
        "rows_read": rows_read,
        "rows_accepted": len(pool),
        "rows_rejected": 0,
        "rows_filtered": rows_filtered,
        "rows_deduplicated": rows_deduplicated,
        "issues": info[:MAX_ISSUES],
        "counts_by_code": _counts(info),
    }
    return PreparedDataset(source=source, spec=spec, template=spec.resolved_template, splits=splits,
                           report=report, labels=labels, statistics=statistics)


def _strip(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()}
    return value
