"""What a PromQL expression reads: the series it names and the labels it needs of them.

An expression is parsed with promql-parser (bindings of GreptimeTeam's Rust parser, Prometheus'
grammar), then walked bottom-up with the label names each subexpression's series carry, given
the names and labels the gateway exports. So a dashboard or a rule is checked without a
Prometheus for what would otherwise show as an empty panel or an alert that never fires: a
metric that does not exist, a matcher or a `by (...)` on a label the series lack
(`by (modle)`), `on (...)` naming a label one side lacks, and two vectors matched one-to-one
(or with `and`/`unless`) whose label sets differ, which never match.

Label values are not checked (`outcome="failed"` for `failure`): a gateway without traffic
exports none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import promql_parser as pp

Labels = frozenset[str]
"""The label names of a vector's series (a scalar or a string has None)."""

# Grafana's range macros: replaced by a duration, so that panel queries parse as PromQL.
# Template variables ($model) appear only inside label values, which are strings.
_GRAFANA_RANGES = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{(?:__rate_interval|__interval|__range)\}")
# Aggregations that keep their input's labels when they have no by/without.
_KEEP_LABELS = {"topk", "bottomk", "limitk", "limit_ratio"}
_SET_OPERATORS = {"and", "or", "unless"}


def parse(expr: str) -> pp.Expr:
    """``expr`` parsed, Grafana's range macros read as 5m; ValueError where it does not parse."""
    return pp.parse(_GRAFANA_RANGES.sub("5m", expr))


@dataclass
class Reading:
    metrics: set[str] = field(default_factory=set)
    """Every series name the expression selects."""
    labels: Labels | None = None
    """The label names of the result's series (None: a scalar)."""
    problems: list[str] = field(default_factory=list)


def read(expr: str, schema: Mapping[str, Labels]) -> Reading:
    """The series ``expr`` selects and what is wrong with it against ``schema`` (series name ->
    label names, target labels included)."""
    reading = Reading()
    reading.labels = _Walk(schema, reading).labels(parse(expr))
    return reading


class _Walk:
    def __init__(self, schema: Mapping[str, Labels], reading: Reading) -> None:
        self._schema = schema
        self._reading = reading

    def _problem(self, node: pp.Expr | str, message: str) -> None:
        self._reading.problems.append(f"{node}: {message}")

    def labels(self, node: pp.Expr) -> Labels | None:
        if isinstance(node, pp.VectorSelector):
            return self._selector(node)
        if isinstance(node, pp.MatrixSelector):
            return self._selector(node.vector_selector)
        if isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
            return self.labels(node.expr)
        if isinstance(node, pp.Call):
            return self._call(node)
        if isinstance(node, pp.AggregateExpr):
            return self._aggregate(node)
        if isinstance(node, pp.BinaryExpr):
            return self._binary(node)
        if isinstance(node, pp.NumberLiteral | pp.StringLiteral):
            return None
        raise TypeError(f"{type(node).__name__} is not a PromQL node this walk knows: {node}")

    def _selector(self, node: pp.VectorSelector) -> Labels:
        matchers = [*node.matchers.matchers, *(m for group in node.matchers.or_matchers for m in group)]
        name = node.name or next((m.value for m in matchers if m.name == "__name__" and m.op == pp.MatchOp.Equal), None)
        if name is None:
            self._problem(node, "selects no metric by name")
            return frozenset()
        self._reading.metrics.add(name)
        labels = self._schema.get(name)
        if labels is None:
            self._problem(node, f"{name} is not exported")
            labels = frozenset(m.name for m in matchers)  # one problem for it, not one per label
        for matcher in matchers:
            if matcher.name != "__name__" and matcher.name not in labels:
                self._problem(node, f"{name} has no label {matcher.name!r} (it has {sorted(labels)})")
        return labels

    def _call(self, node: pp.Call) -> Labels | None:
        name = node.func.name
        args = [self.labels(arg) for arg in node.args]
        if node.func.return_type == pp.ValueType.Scalar:
            return None
        if name in ("absent", "absent_over_time"):
            # One series, labelled by the equality matchers of a selector argument.
            inner = node.args[0]
            selector = inner.vector_selector if isinstance(inner, pp.MatrixSelector) else inner
            if not isinstance(selector, pp.VectorSelector):
                return frozenset()
            return frozenset(
                m.name for m in selector.matchers.matchers if m.op == pp.MatchOp.Equal and m.name != "__name__"
            )
        vectors = [labels for labels in args if labels is not None]
        if not vectors:  # vector(1)
            return frozenset()
        labels = vectors[0]
        if name == "histogram_quantile":
            if "le" not in labels:
                self._problem(node, "its buckets have no 'le' label left (keep `le` in the by (...))")
            return labels - {"le"}
        if name in ("label_replace", "label_join"):
            destination = node.args[1]
            assert isinstance(destination, pp.StringLiteral)
            return labels | {destination.val}
        return labels

    def _aggregate(self, node: pp.AggregateExpr) -> Labels:
        inner = self.labels(node.expr) or frozenset()
        op = str(node.op)
        added: Labels = frozenset()
        if op == "count_values":
            assert isinstance(node.param, pp.StringLiteral)
            added = frozenset({node.param.val})
        modifier = node.modifier
        if modifier is None:
            return (inner if op in _KEEP_LABELS else frozenset()) | added
        for label in modifier.labels:
            if label not in inner:
                self._problem(node, f"groups by {label!r}, which its input lacks (it has {sorted(inner)})")
        if modifier.type == pp.AggModifierType.By:
            return frozenset(modifier.labels) | added
        return inner - frozenset(modifier.labels) | added

    def _binary(self, node: pp.BinaryExpr) -> Labels | None:
        left, right = self.labels(node.lhs), self.labels(node.rhs)
        if left is None or right is None:  # a scalar on either side: the other side's labels
            return right if left is None else left
        op = str(node.op)
        modifier = node.modifier
        matching = modifier.matching if modifier is not None else None
        on = matching is not None and matching.type == pp.LabelModifierType.Include
        named = frozenset(matching.labels) if matching is not None else frozenset()
        for label in named:
            if on and (label not in left or label not in right):
                self._problem(node, f"matches on {label!r}, which one side lacks ({sorted(left)} vs {sorted(right)})")
            if not on and label not in left | right:
                self._problem(node, f"ignores {label!r}, which neither side has")
        keys = (named, named) if on else (left - named, right - named)
        if op in _SET_OPERATORS:
            if op != "or" and keys[0] != keys[1]:
                self._problem(node, f"`{op}` of {sorted(keys[0])} and {sorted(keys[1])} never matches")
            return left & right if op == "or" else left
        group = frozenset(modifier.group_labels or ()) if modifier is not None else frozenset()
        card = modifier.card if modifier is not None else pp.VectorMatchCardinality.OneToOne
        if card == pp.VectorMatchCardinality.ManyToOne:
            self._grouped(node, group, right)
            return left | group
        if card == pp.VectorMatchCardinality.OneToMany:
            self._grouped(node, group, left)
            return right | group
        if keys[0] != keys[1]:
            self._problem(node, f"one-to-one match of {sorted(keys[0])} and {sorted(keys[1])} never matches")
        return named if on else left - named

    def _grouped(self, node: pp.BinaryExpr, group: Labels, one_side: Labels) -> None:
        for label in group - one_side:
            self._problem(node, f"group_left/right takes {label!r}, which the one side lacks")
