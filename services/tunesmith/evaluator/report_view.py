"""The HTML report's view (tunesmith.evaluator.html_report.ReportView) from an evaluation's
protobuf report and what the evaluation computed along the way (answers, error analyses,
training curves). The one place that maps the report proto to the page."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from tunesmith.evaluator.html_report import (
    ComparisonView,
    ConfusionView,
    CurveView,
    EloView,
    ErrorAnalysisView,
    ExampleView,
    GateRow,
    GateView,
    MetricView,
    ReportView,
    SampleView,
    ScoreView,
)

#: Samples shown on the page (the report artifact's outputs.jsonl holds every row).
PAGE_SAMPLES = 20


def _score_views(scores) -> list[ScoreView]:
    return [ScoreView(label=s.label, model=s.model, metrics=[
        MetricView(benchmark=m.benchmark, metric=m.metric, value=m.value, ci_low=m.ci_low, ci_high=m.ci_high,
                   higher_is_better=m.higher_is_better) for m in s.metrics]) for s in scores]


def build_view(record, rows: Sequence[Any], answered: Mapping[str, Sequence[Any]],
               analyses: Mapping[str, Any], curves: Mapping[str, Any]) -> ReportView:
    """record: evaluator_pb2.Evaluation; rows: the EvalRows; answered: label -> EvalRows with
    predictions; analyses: label -> evaluator.errors.ErrorAnalysis; curves: label ->
    trainer TrainingCurves (the first model that has one is drawn)."""
    from tunesmith.evaluator.errors import confusion_matrix

    spec, report = record.spec, record.report
    higher = {(m.benchmark, m.metric): m.higher_is_better for s in report.scores for m in s.metrics}
    comparisons = []
    for c in report.comparisons:
        bench, _, metric = c.metric.partition(".")
        comparisons.append(ComparisonView(baseline=c.baseline, candidate=c.candidate, metric=c.metric, delta=c.delta,
                                          p_value=c.p_value, significant=c.significant, test=c.test,
                                          higher_is_better=higher.get((bench, metric), True)))
    gate = None
    if report.gate.checks:
        gate = GateView(passed=report.gate.passed, tolerance=spec.gate.tolerance or spec.regression_tolerance,
                        rows=[GateRow(suite=f"{c.suite or 'task'} ({c.candidate})", metric=c.metric,
                                      baseline=c.baseline_value, candidate=c.candidate_value, delta=c.delta,
                                      p_value=c.p_value, passed=c.passed) for c in report.gate.checks])
    errors = {}
    for label, analysis in analyses.items():
        out = answered[label]
        errors[label] = ErrorAnalysisView(counts=dict(analysis.counts), examples={
            category: [ExampleView(row=i + 1, prompt=out[i].prompt, reference=out[i].reference,
                                   prediction=out[i].prediction) for i in idx]
            for category, idx in analysis.examples.items()})
    confusion = {}
    labels = list(rows[0].labels) if rows and rows[0].labels else []
    if labels:
        for label, out in answered.items():
            order, counts = confusion_matrix(out, labels)
            confusion[label] = ConfusionView(labels=list(order), counts=[list(r) for r in counts])
    loss = None
    for m in spec.models:
        c = curves.get(m.label)
        if c is not None and (c.train_loss or c.validation_loss):
            loss = CurveView(train=[(p.step, p.loss) for p in c.train_loss],
                             validation=[(p.step, p.loss) for p in c.validation_loss])
            break
    samples = [SampleView(row=s.row, prompt=s.prompt, reference=s.reference, outputs=dict(s.outputs))
               for s in report.samples[:PAGE_SAMPLES]]
    scores = _score_views(report.scores)
    by_label = {v.label: v for v in scores}
    for v in _score_views(report.gate.suite_scores):  # the suites' metrics join each model's block
        by_label[v.label].metrics.extend(v.metrics) if v.label in by_label else scores.append(v)
    return ReportView(
        title=f"Evaluation {record.job.id}", dataset=spec.dataset_id, split=spec.split, rows=report.rows,
        created=record.job.created_at.ToJsonString() if record.job.HasField("created_at") else "",
        scores=scores, comparisons=comparisons, gate=gate,
        elo=[EloView(label=e.label, rating=e.rating, ci_low=e.ci_low, ci_high=e.ci_high, wins=e.wins,
                     losses=e.losses, ties=e.ties) for e in report.elo],
        errors=errors, confusion=confusion, loss_curve=loss, samples=samples)
