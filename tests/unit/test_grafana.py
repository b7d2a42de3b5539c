"""grafana/: the dashboard, provisioning, scrape config and alert rules use CONTRACT §4's metrics.

Every PromQL expression (dashboard targets, template variables, annotations, alert rules) is
parsed by a small PromQL checker that knows each metric's type and labels. It rejects a name
that is not exposed (``router_request_total``), a label a metric does not have (``by (model)``
on router_requests_total), a histogram_quantile without ``le``, rate() over a gauge, a counter
used without rate()/increase(), and a one-to-one vector match whose sides carry different
labels (a query that returns nothing). The YAML files are read with PyYAML when it is installed
and otherwise with a loader for the plain block YAML they are written in (PyYAML is not a test
dependency); the two are compared whenever PyYAML is there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.contract import METRICS

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "asgi-router.json"
ALERTS = GRAFANA / "prometheus" / "alerts.yml"
PROMETHEUS = GRAFANA / "prometheus" / "prometheus.yml"
DS_PROVISIONING = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASH_PROVISIONING = GRAFANA / "provisioning" / "dashboards" / "asgi-router.yml"
YAML_FILES = [ALERTS, PROMETHEUS, DS_PROVISIONING, DASH_PROVISIONING]

CONTRACT = METRICS  # CONTRACT §4 (tests/contract.py)
# labels Prometheus attaches to every scraped series (the target's)
TARGET_LABELS = frozenset({"job", "instance"})
SCRAPE_JOB = "asgi-router"


@dataclass(frozen=True)
class Series:
    """One series name as Prometheus stores it."""

    counter: bool  # only goes up: rate()/increase() it
    labels: frozenset[str]


def exposed_series() -> dict[str, Series]:
    """The series names prometheus_client exposes for CONTRACT §4, plus Prometheus' ``up``."""
    out: dict[str, Series] = {"up": Series(False, TARGET_LABELS)}
    for name, (kind, labels) in CONTRACT.items():
        labels = labels | TARGET_LABELS
        if kind == "counter":
            assert name.endswith("_total"), name
            out[name] = Series(True, labels)
        elif kind == "histogram":
            out[name + "_bucket"] = Series(True, labels | {"le"})
            out[name + "_sum"] = Series(True, labels)
            out[name + "_count"] = Series(True, labels)
        else:
            out[name] = Series(False, labels)
    return out


SERIES = exposed_series()


# ------------------------------------------------------------------------------------- PromQL
GRAFANA_INTERVALS = re.compile(r"\$\{?__(?:rate_interval|interval|range)(?:_ms|_s)?\}?")
TOKEN = re.compile(
    r"""\s+|\#[^\n]*
    |(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<range>\[[^\]]*\])
    |(?P<dur>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)
    |(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=(){},])""",
    re.VERBOSE,
)
AGGREGATIONS = {
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar",
    "topk", "bottomk", "quantile", "count_values", "limitk", "limit_ratio",
}  # fmt: skip
AGG_WITH_PARAM = {"topk", "bottomk", "quantile", "count_values", "limitk", "limit_ratio"}
COUNTER_FUNCS = {"rate", "irate", "increase", "resets"}
GAUGE_RANGE_FUNCS = {"delta", "idelta", "deriv", "predict_linear", "changes"} | {
    f"{f}_over_time" for f in ("avg", "min", "max", "sum", "count", "last", "stddev", "stdvar", "quantile")
}
RANGE_FUNCS = COUNTER_FUNCS | GAUGE_RANGE_FUNCS | {"absent_over_time", "present_over_time"}
SAME_LABEL_FUNCS = {
    "abs", "ceil", "floor", "round", "sqrt", "exp", "ln", "log2", "log10", "clamp", "clamp_min",
    "clamp_max", "sort", "sort_desc", "timestamp",
}  # fmt: skip
# a raw counter is fine where only the existence of its series matters
RAW_COUNTER_OK = {"group", "count", "absent", "label_values"}
PRECEDENCE = [{"or"}, {"and", "unless"}, {"==", "!=", "<=", ">=", "<", ">"}, {"+", "-"}, {"*", "/", "%"}]
POW = 5


class PromQLError(Exception):
    pass


@dataclass
class Sel:
    name: str
    matchers: list[tuple[str, str, str]]
    range: str | None = None


@dataclass
class Call:
    func: str
    args: list[Any]


@dataclass
class Agg:
    op: str
    grouping: str | None  # "by" | "without" | None
    labels: list[str]
    args: list[Any]


@dataclass
class Bin:
    op: str
    lhs: Any
    rhs: Any
    match: tuple[str, list[str]] | None = None  # ("on" | "ignoring", labels)
    group: tuple[str, list[str]] | None = None  # ("left" | "right", extra labels)


@dataclass
class Lit:
    value: float | str


class Parser:
    def __init__(self, text: str) -> None:
        text = GRAFANA_INTERVALS.sub("5m", text)
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = TOKEN.match(text, pos)
            if not m:
                raise PromQLError(f"cannot read {text[pos : pos + 20]!r}")
            pos = m.end()
            if m.lastgroup:
                self.toks.append((m.lastgroup, m.group(m.lastgroup)))
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("eof", "")

    def take(self, want: str | None = None) -> str:
        kind, val = self.peek()
        if kind == "eof" or (want is not None and val != want):
            raise PromQLError(f"expected {want or 'a token'}, got {val or 'the end'!r}")
        self.i += 1
        return val

    def parse(self) -> Any:
        node = self.expr(0)
        if self.peek()[0] != "eof":
            raise PromQLError(f"unexpected {self.peek()[1]!r}")
        return node

    def label_list(self) -> list[str]:
        self.take("(")
        out: list[str] = []
        while self.peek()[1] != ")":
            kind, val = self.peek()
            if kind != "id":
                raise PromQLError(f"expected a label name, got {val!r}")
            out.append(self.take())
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        return out

    def expr(self, level: int) -> Any:
        if level == POW:
            lhs = self.unary()
            if self.peek()[1] == "^":
                self.take()
                return Bin("^", lhs, self.expr(POW))  # right-associative
            return lhs
        lhs = self.expr(level + 1)
        while self.peek()[1] in PRECEDENCE[level]:
            op = self.take()
            if self.peek()[1] == "bool":
                self.take()
            match = group = None
            if self.peek()[1] in ("on", "ignoring"):
                match = (self.take(), self.label_list())
            if self.peek()[1] in ("group_left", "group_right"):
                side = self.take().removeprefix("group_")
                group = (side, self.label_list() if self.peek()[1] == "(" else [])
            lhs = Bin(op, lhs, self.expr(level + 1), match, group)
        return lhs

    def unary(self) -> Any:
        if self.peek()[1] in ("-", "+"):
            sign = self.take()
            inner = self.unary()
            return Bin("*", Lit(-1.0 if sign == "-" else 1.0), inner)
        return self.primary()

    def primary(self) -> Any:
        kind, val = self.peek()
        if val == "(":
            self.take()
            node = self.expr(0)
            self.take(")")
            return node
        if kind == "num":
            return Lit(float(self.take()))
        if kind == "str":
            return Lit(self.take()[1:-1])
        if kind != "id":
            raise PromQLError(f"unexpected {val or 'end'!r}")
        name = self.take()
        if name in AGGREGATIONS and self.peek()[1] in ("(", "by", "without"):
            grouping, labels = None, []
            if self.peek()[1] in ("by", "without"):
                grouping, labels = self.take(), self.label_list()
            args = self.args()
            if grouping is None and self.peek()[1] in ("by", "without"):
                grouping, labels = self.take(), self.label_list()
            return Agg(name, grouping, labels, args)
        if self.peek()[1] == "(":
            return Call(name, self.args())
        matchers: list[tuple[str, str, str]] = []
        if self.peek()[1] == "{":
            self.take()
            while self.peek()[1] != "}":
                label = self.take()
                op = self.take()
                if op not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"bad matcher operator {op!r}")
                kind, value = self.peek()
                if kind != "str":
                    raise PromQLError(f"matcher {label} needs a string value")
                matchers.append((label, op, self.take()[1:-1]))
                if self.peek()[1] == ",":
                    self.take()
            self.take("}")
        sel = Sel(name, matchers)
        if self.peek()[0] == "range":
            sel.range = self.take()
        if self.peek()[1] == "offset":
            self.take()
            if self.peek()[0] != "dur":
                raise PromQLError("offset needs a duration")
            self.take()
        return sel

    def args(self) -> list[Any]:
        self.take("(")
        out: list[Any] = []
        while self.peek()[1] != ")":
            out.append(self.expr(0))
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        return out


@dataclass
class Typ:
    kind: str  # "scalar" | "string" | "vector" | "matrix"
    labels: frozenset[str] = frozenset()


@dataclass
class Checker:
    """Walks a parsed expression, computing each part's type and labels; collects problems."""

    problems: list[str] = field(default_factory=list)
    metrics: set[str] = field(default_factory=set)

    def bad(self, msg: str) -> None:
        self.problems.append(msg)

    def check(self, node: Any, parent: str = "") -> Typ:
        if isinstance(node, Lit):
            return Typ("scalar" if isinstance(node.value, float) else "string")
        if isinstance(node, Sel):
            return self.selector(node, parent)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Agg):
            return self.aggregation(node)
        if isinstance(node, Bin):
            return self.binary(node)
        raise AssertionError(node)

    def selector(self, s: Sel, parent: str) -> Typ:
        self.metrics.add(s.name)
        series = SERIES.get(s.name)
        if series is None:
            self.bad(f"{s.name} is not a metric asgi-router exposes (CONTRACT §4)")
            return Typ("matrix" if s.range else "vector")
        for label, _, _ in s.matchers:
            if label not in series.labels | {"__name__"}:
                self.bad(f"{s.name} has no label {label!r} (it has {sorted(series.labels)})")
        if series.counter and parent not in COUNTER_FUNCS | RAW_COUNTER_OK:
            self.bad(f"counter {s.name} used without rate()/increase()")
        if not series.counter and parent in COUNTER_FUNCS:
            self.bad(f"{parent}() over the gauge {s.name}: use it as it is, or delta()/deriv()")
        if series.counter and parent in GAUGE_RANGE_FUNCS - {"changes"}:
            self.bad(f"{parent}() over the counter {s.name}: use rate()/increase()")
        if s.range and parent not in RANGE_FUNCS:
            self.bad(f"range selector {s.name}{s.range} outside a range function")
        if not s.range and parent in RANGE_FUNCS:
            self.bad(f"{parent}() needs a range selector, got {s.name}")
        return Typ("matrix" if s.range else "vector", series.labels)

    def call(self, c: Call) -> Typ:
        f, args = c.func, c.args
        if f == "histogram_quantile":
            if len(args) != 2 or not isinstance(args[0], Lit) or not 0 < float(args[0].value) <= 1:
                self.bad("histogram_quantile(φ, v) needs a literal φ in (0, 1]")
                return Typ("vector")
            inner = self.check(args[1], f)
            if "le" not in inner.labels:
                self.bad(f"histogram_quantile over labels {sorted(inner.labels)}: keep le (sum by (le, …))")
            not_buckets = [s for s in selectors(args[1]) if not s.name.endswith("_bucket")]
            if not_buckets:
                self.bad(f"histogram_quantile over {[s.name for s in not_buckets]}: use the _bucket series")
            return Typ("vector", inner.labels - {"le"})
        if f in RANGE_FUNCS:
            types = [self.check(a, f) for a in args]
            matrices = [t for t in types if t.kind == "matrix"]
            if len(matrices) != 1:
                self.bad(f"{f}() needs one range vector")
                return Typ("vector")
            return Typ("vector", matrices[0].labels)
        if f in SAME_LABEL_FUNCS:
            types = [self.check(a, f) for a in args]
            return Typ("vector", types[0].labels) if types else Typ("vector")
        if f == "label_replace":
            v = self.check(args[0], f)
            dst, src = args[1].value, args[3].value
            if src not in v.labels:
                self.bad(f"label_replace from {src!r}, which the expression does not have")
            return Typ("vector", v.labels | {dst})
        if f == "absent":
            self.check(args[0], f)
            eq = {label for s in selectors(args[0]) for label, op, _ in s.matchers if op == "="}
            return Typ("vector", frozenset(eq))
        if f == "vector":
            self.check(args[0], f)
            return Typ("vector")
        if f in ("scalar", "time"):
            for a in args:
                self.check(a, f)
            return Typ("scalar")
        self.bad(f"unknown function {f}()")
        return Typ("vector")

    def aggregation(self, a: Agg) -> Typ:
        args = a.args
        if a.op in AGG_WITH_PARAM:
            self.check(args[0], a.op)
            args = args[1:]
        if len(args) != 1:
            self.bad(f"{a.op}() takes one vector")
            return Typ("vector")
        inner = self.check(args[0], a.op)
        if inner.kind != "vector":
            self.bad(f"{a.op}() over a {inner.kind}")
        missing = set(a.labels) - inner.labels
        if missing:
            self.bad(f"{a.op} {a.grouping} ({', '.join(a.labels)}): {sorted(missing)} not among "
                     f"the labels {sorted(inner.labels)}")  # fmt: skip
        if a.op in ("topk", "bottomk", "limitk", "limit_ratio"):
            return Typ("vector", inner.labels)
        if a.grouping == "by":
            out = frozenset(a.labels)
        elif a.grouping == "without":
            out = inner.labels - set(a.labels)
        else:
            out = frozenset()
        if a.op == "count_values":
            out |= {str(a.args[0].value)}
        return Typ("vector", out)

    def binary(self, b: Bin) -> Typ:
        lhs, rhs = self.check(b.lhs), self.check(b.rhs)
        for side in (lhs, rhs):
            if side.kind not in ("scalar", "vector"):
                self.bad(f"operator {b.op} over a {side.kind}")
        if lhs.kind == "scalar" and rhs.kind == "scalar":
            return Typ("scalar")
        if lhs.kind == "scalar" or rhs.kind == "scalar":
            if b.match or b.group:
                self.bad(f"vector matching on {b.op} with a scalar")
            return rhs if lhs.kind == "scalar" else lhs
        if b.match:
            how, labels = b.match
            for name, side in (("left", lhs), ("right", rhs)):
                missing = set(labels) - side.labels
                if how == "on" and missing:
                    self.bad(f"{b.op} on ({', '.join(labels)}): the {name} side lacks {sorted(missing)}")
            keys_l = frozenset(labels) if how == "on" else lhs.labels - set(labels)
            keys_r = frozenset(labels) if how == "on" else rhs.labels - set(labels)
        else:
            keys_l, keys_r = lhs.labels, rhs.labels
        if b.op == "or":  # a union: each side keeps its own labels
            return Typ("vector", lhs.labels)
        if b.group:
            many_side, extra = b.group
            many, one = (lhs, rhs) if many_side == "left" else (rhs, lhs)
            missing = set(extra) - one.labels
            if missing:
                self.bad(f"group_{many_side}({', '.join(extra)}): {sorted(missing)} not on the one side")
            if (keys_r if many_side == "left" else keys_l) - many.labels:
                self.bad(f"group_{many_side}: the matching labels are not all on the many side")
            return Typ("vector", many.labels | set(extra))
        if keys_l != keys_r:
            self.bad(
                f"one-to-one {b.op} between labels {sorted(keys_l)} and {sorted(keys_r)}: "
                "no series would match (aggregate both sides by the same labels, or use on())"
            )
        if b.match:
            return Typ("vector", keys_l)
        return Typ("vector", lhs.labels)


def selectors(node: Any) -> list[Sel]:
    if isinstance(node, Sel):
        return [node]
    if isinstance(node, Call | Agg):
        return [s for a in node.args for s in selectors(a)]
    if isinstance(node, Bin):
        return selectors(node.lhs) + selectors(node.rhs)
    return []


def check_promql(expr: str) -> tuple[list[str], Typ, set[str]]:
    """(problems, result type, metric names used) of one expression."""
    checker = Checker()
    try:
        typ = checker.check(Parser(expr).parse())
    except (PromQLError, IndexError, AttributeError) as e:
        return [f"does not parse: {e}"], Typ("vector"), checker.metrics
    if typ.kind not in ("vector", "scalar"):
        checker.bad(f"the expression is a {typ.kind}, not an instant vector")
    return checker.problems, typ, checker.metrics


LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<sel>.+),\s*)?(?P<label>\w+)\)\s*$", re.DOTALL)


def check_label_values(query: str) -> list[str]:
    m = LABEL_VALUES.match(query)
    if not m or not m.group("sel"):
        return [f"{query!r} is not label_values(metric, label)"]
    checker = Checker()
    try:
        node = Parser(m.group("sel")).parse()
    except PromQLError as e:
        return [f"does not parse: {e}"]
    if not isinstance(node, Sel):
        return [f"label_values over {m.group('sel')!r}, not a metric selector"]
    typ = checker.check(node, "label_values")
    if m.group("label") not in typ.labels and not checker.problems:
        checker.bad(f"{node.name} has no label {m.group('label')!r}")
    return checker.problems


# ------------------------------------------------------------------------- the PromQL checker
@pytest.mark.parametrize(
    "expr",
    [
        "sum by (route, status) (rate(router_requests_total[5m]))",
        "histogram_quantile(0.95, sum by (le, route) (rate(router_time_to_first_token_seconds_bucket[5m])))",
        "sum by (key) (increase(router_spend_usd_total[1d]))",
        "sum by (provider) (rate(router_rate_limited_total[5m]))",
        'up{job="asgi-router"} == 0',
        "max by (instance) (router_config_generation)",
        "sum by (route) (rate(x_total[5m]))".replace("x_total", "router_fallbacks_total"),
        "sum(rate(router_requests_total[5m])) / sum(rate(router_requests_total[5m])) > 0.1",
        'sum by (race, model) (rate(router_race_outcomes_total{outcome="won"}[5m])) / on (race) group_left '
        'sum by (race) (rate(router_race_outcomes_total{outcome="won"}[5m]))',
        "-sum without (instance, job) (router_inflight_requests offset 5m)",
        "sum by (route) (rate(router_requests_total[5m])) > 1 and sum by (route) (rate(router_requests_total[5m])) > 0.1",
    ],
)
def test_checker_accepts_good_promql(expr: str) -> None:
    problems, _, _ = check_promql(expr)
    assert problems == []


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("sum(rate(router_request_total[5m]))", "not a metric"),
        ("sum(rate(router_requests[5m]))", "not a metric"),
        ("histogram_quantile(0.9, sum by (le) (rate(router_overhead_seconds[5m])))", "not a metric"),
        ("router_cooldown_active_total", "not a metric"),
        ("sum by (model) (rate(router_requests_total[5m]))", "['model'] not among"),
        ('sum(rate(router_requests_total{provider="x"}[5m]))', "no label 'provider'"),
        ("sum by (route) (router_config_generation)", "['route'] not among"),
        ("histogram_quantile(0.99, sum by (route) (rate(router_overhead_seconds_bucket[5m])))", "keep le"),
        ("histogram_quantile(0.99, sum by (le) (rate(router_overhead_seconds_count[5m])))", "_bucket series"),
        (
            "sum by (route) (rate(router_requests_total[5m])) > 1 and sum by (provider) "
            "(rate(router_rate_limited_total[5m])) > 1",
            "one-to-one and",
        ),
        ("rate(router_inflight_requests[5m])", "over the gauge"),
        ("sum by (route) (router_requests_total)", "without rate()"),
        ("sum by (route) (rate(router_requests_total))", "needs a range selector"),
        (
            "sum by (route, status) (rate(router_requests_total[5m])) / sum by (route) "
            "(rate(router_requests_total[5m]))",
            "one-to-one",
        ),
        ("sum(rate(router_requests_total[5m])) / on (route) sum(rate(router_requests_total[5m]))", "lacks"),
        ("sum by (route) (rate(router_requests_total[5m]) ", "does not parse"),
        ("foo(router_config_generation)", "unknown function"),
    ],
)
def test_checker_rejects_bad_promql(expr: str, complaint: str) -> None:
    problems, _, _ = check_promql(expr)
    assert any(complaint in p for p in problems), problems


def test_checker_labels_of_the_result() -> None:
    _, typ, used = check_promql(
        'histogram_quantile(0.5, sum by (le, provider, model) (rate(router_upstream_duration_seconds_bucket{provider=~"$provider"}[$__rate_interval])))'
    )
    assert typ.labels == {"provider", "model"}
    assert used == {"router_upstream_duration_seconds_bucket"}


# ------------------------------------------------------------------------------ YAML loading
def mini_yaml(text: str) -> Any:
    """Block-style YAML as written in grafana/: mappings, ``-`` lists, plain/quoted scalars,
    ``[a, b]`` flow lists, ``|``/``>`` block scalars, comments. Anything else is an error."""
    lines = text.split("\n")

    def strip_comment(s: str) -> str:
        quote, i = None, 0
        while i < len(s):
            ch = s[i]
            if quote:
                if ch == "\\" and quote == '"':
                    i += 1  # an escaped character
                elif ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "#" and (i == 0 or s[i - 1] in " \t"):
                return s[:i].rstrip()
            i += 1
        return s.rstrip()

    def scalar(s: str) -> Any:
        s = s.strip()
        if s.startswith('"'):
            return json.loads(s)
        if s.startswith("'"):
            return s[1:-1].replace("''", "'")
        if s.startswith("["):
            inner = s[1:-1].strip()
            return (
                [scalar(p) for p in re.findall(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^,]+', inner)] if inner else []
            )
        if s.startswith(("{", "&", "*", "!", "%", "@", "`")):
            raise ValueError(f"unsupported YAML: {s!r}")
        if s in ("true", "false"):
            return s == "true"
        if s in ("null", "~", ""):
            return None
        for conv in (int, float):
            try:
                return conv(s)
            except ValueError:
                pass
        return s

    # (indent, content, raw line index) of the meaningful lines
    items = [
        (len(raw) - len(raw.lstrip(" ")), strip_comment(raw).strip(), n)
        for n, raw in enumerate(lines)
        if strip_comment(raw).strip()
    ]
    pos = 0

    def block_scalar(style: str, parent_indent: int, line_no: int) -> str:
        nonlocal pos
        body: list[str] = []
        n = line_no + 1
        while n < len(lines) and (
            not lines[n].strip() or len(lines[n]) - len(lines[n].lstrip(" ")) > parent_indent
        ):
            body.append(lines[n])
            n += 1
        while pos < len(items) and items[pos][2] < n:
            pos += 1
        while body and not body[-1].strip():
            body.pop()
        indent = min(len(b) - len(b.lstrip(" ")) for b in body if b.strip())
        body = [b[indent:] for b in body]
        if style[0] == ">":
            text = ""
            for b in body:
                text += "\n" if not b else (" " if text and not text.endswith("\n") else "") + b
        else:
            text = "\n".join(body)
        return text if style.endswith("-") else text + "\n"

    def value_after(rest: str, indent: int, line_no: int) -> Any:
        if rest in ("|", "|-", ">", ">-"):
            return block_scalar(rest, indent, line_no)
        if rest:
            return scalar(rest)
        if pos < len(items) and (
            items[pos][0] > indent or (items[pos][0] == indent and items[pos][1][:2] == "- ")
        ):
            return node(items[pos][0])
        return None

    def node(indent: int) -> Any:
        nonlocal pos
        if items[pos][1].startswith("- ") or items[pos][1] == "-":
            seq = []
            while pos < len(items) and items[pos][0] == indent and items[pos][1].startswith("-"):
                _, content, line_no = items[pos]
                rest = content[1:].strip()
                if re.match(r"^[\w.-]+:(\s|$)", rest):  # "- key: value" opens a mapping
                    items[pos] = (indent + 2, rest, line_no)
                    seq.append(node(indent + 2))
                else:
                    pos += 1
                    seq.append(value_after(rest, indent, line_no))
            return seq
        mapping: dict[str, Any] = {}
        while pos < len(items) and items[pos][0] == indent and not items[pos][1].startswith("- "):
            _, content, line_no = items[pos]
            m = re.match(r"^([\w.-]+):(?:\s+(.*))?$", content)
            if not m:
                raise ValueError(f"unsupported YAML line {line_no + 1}: {content!r}")
            pos += 1
            mapping[m.group(1)] = value_after((m.group(2) or "").strip(), indent, line_no)
        return mapping

    result = node(items[0][0]) if items else None
    if pos != len(items):
        raise ValueError(f"unsupported YAML near line {items[pos][2] + 1}")
    return result


def load_yaml(path: Path) -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return mini_yaml(path.read_text(encoding="utf-8"))
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(GRAFANA)))
def test_mini_yaml_reads_the_files_as_pyyaml_does(path: Path) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed: the files are read by mini_yaml alone")
    assert mini_yaml(path.read_text(encoding="utf-8")) == yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("text", ["a: &x 1", "a: {b: 1}", "a: 1\nb", "- a\nb: 1"])
def test_mini_yaml_refuses_what_it_does_not_read(text: str) -> None:
    with pytest.raises(ValueError):
        mini_yaml(text)


# ------------------------------------------------------------------------------- the dashboard
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return out


def dashboard_exprs(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, expr, legendFormat) of every PromQL query of the dashboard."""
    out = []
    for p in all_panels(d):
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"], t.get("legendFormat", "")))
    for a in d["annotations"]["list"]:
        if "expr" in a:
            out.append((f"annotation {a['name']!r}", a["expr"], a.get("textFormat", "")))
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(ALERTS)["groups"] for r in g["rules"]]


def all_exprs() -> list[Any]:
    rules = [(f"alert {r['alert']}", r["expr"], json.dumps(r.get("annotations", {}))) for r in alert_rules()]
    return [pytest.param(*e, id=e[0]) for e in dashboard_exprs(dashboard()) + rules]


def template_labels(text: str) -> set[str]:
    """Labels a legend (``{{route}}``) or an alert annotation (``{{ $labels.route }}``) names."""
    legend = set(re.findall(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}", text))
    return legend | set(re.findall(r"\$labels\.([A-Za-z_]\w*)", text))


@pytest.mark.parametrize(("where", "expr", "template"), all_exprs())
def test_every_expression_uses_contract_metrics_and_labels(where: str, expr: str, template: str) -> None:
    problems, typ, used = check_promql(expr)
    assert problems == [], f"{where}: {expr}"
    assert used, f"{where} uses no metric"
    missing = template_labels(template) - typ.labels
    assert not missing, (
        f"{where}: the legend/annotations name {sorted(missing)}, the result has {sorted(typ.labels)}"
    )


def test_every_contract_metric_is_on_the_dashboard() -> None:
    used: set[str] = set()
    for _, expr, _ in dashboard_exprs(dashboard()):
        used |= check_promql(expr)[2]
    for name, (kind, _) in CONTRACT.items():
        names = {name} if kind != "histogram" else {name + s for s in ("_bucket", "_sum", "_count")}
        assert used & names, f"{name} is on no panel"


def dashboard_problems(d: dict[str, Any]) -> list[str]:
    """Every problem of the dashboard's queries: PromQL, legends, template variables."""
    out = []
    for where, expr, legend in dashboard_exprs(d):
        problems, typ, _ = check_promql(expr)
        out += [f"{where}: {p}" for p in problems]
        out += [f"{where}: legend names {label!r}" for label in template_labels(legend) - typ.labels]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            query = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
            out += [f"${v['name']}: {p}" for p in check_label_values(query)]
    return out


def test_a_wrong_name_or_label_in_the_dashboard_is_caught() -> None:
    """The checks can fail: mutate the real dashboard and look."""
    text = DASHBOARD.read_text(encoding="utf-8")
    assert dashboard_problems(json.loads(text)) == []
    for before, after, complaint in [
        ("router_requests_total", "router_request_total", "not a metric"),
        ("sum by (route) (rate(router_requests_total", "sum by (model) (rate(router_requests_total", "not among"),
        ("sum by (le) (rate(router_overhead_seconds_bucket", "sum by (route) (rate(router_overhead_seconds_bucket", "keep le"),
        ("label_values(router_spend_usd_total, key)", "label_values(router_spend_usd_total, route)", "no label 'route'"),
        ('"legendFormat": "{{route}}"', '"legendFormat": "{{model}}"', "legend names 'model'"),
        ("rate(router_spend_usd_total", "rate(router_cooldown_active", "over the gauge"),
    ]:  # fmt: skip
        assert before in text, before
        problems = dashboard_problems(json.loads(text.replace(before, after)))
        assert any(complaint in p for p in problems), (after, problems)


def test_dashboard_structure() -> None:
    d = dashboard()
    assert d["schemaVersion"] >= 39
    assert d["uid"] and d["title"]
    panels = all_panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    cells: dict[tuple[int, int], int] = {}
    for p in d["panels"]:  # the top-level grid: no overlap, within 24 columns
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['id']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["title"] and p.get("description"), f"panel {p['id']} needs a title and a description"
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]


def test_units_fit_the_queries() -> None:
    for p in all_panels(dashboard()):
        if p["type"] == "row":
            continue
        unit = p["fieldConfig"]["defaults"].get("unit")
        exprs = " ".join(t["expr"] for t in p["targets"])
        assert unit in {"reqps", "ops", "s", "currencyUSD", "short", "percentunit"}, (p["title"], unit)
        if "_usd_total" in exprs:
            assert unit == "currencyUSD", p["title"]
        elif "histogram_quantile" in exprs:
            assert unit == "s", p["title"]
        elif re.search(r"\)\s*/\s*(on\b|\n|sum)", exprs):  # a ratio of two rates
            assert unit == "percentunit", p["title"]


def test_template_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("route", "provider", "model", "key"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${DS_PROMETHEUS}", name
        query = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
        assert query.rstrip(")").endswith(f", {name}"), f"${name} lists {query}"
        assert check_label_values(query) == [], query
    # every $variable a query uses exists
    used = {m for _, expr, _ in dashboard_exprs(dashboard()) for m in re.findall(r"\$(\w+)", expr)}
    assert used - {"__rate_interval", "__range", "__interval"} <= set(variables)


def test_label_values_checker_can_fail() -> None:
    assert check_label_values("label_values(router_requests_total, model)")
    assert check_label_values("label_values(router_request_total, route)")
    assert check_label_values("label_values(router_spend_usd_total, key)") == []


# -------------------------------------------------------------------------------- alert rules
def test_alert_rules_structure() -> None:
    data = load_yaml(ALERTS)
    assert set(data) == {"groups"}
    names: list[str] = []
    for g in data["groups"]:
        assert set(g) <= {"name", "interval", "rules", "limit"} and g["name"] and g["rules"], g
        for r in g["rules"]:
            assert set(r) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, r
            names.append(r["alert"])
            assert re.fullmatch(r"AsgiRouter[A-Za-z]+", r["alert"]), r["alert"]
            assert re.fullmatch(r"\d+[smh]", str(r["for"])), f"{r['alert']}: for: {r.get('for')}"
            assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
            assert r["annotations"]["summary"].strip() and r["annotations"]["description"].strip(), r["alert"]
            for job in re.findall(r'job\s*=\s*"([^"]*)"', r["expr"]):
                assert job == SCRAPE_JOB, (
                    f"{r['alert']} matches job {job!r}, the scrape job is {SCRAPE_JOB!r}"
                )
    assert len(names) == len(set(names)), "duplicate alert names"


def test_the_expected_alerts_exist() -> None:
    used = {r["alert"]: r["expr"] for r in alert_rules()}
    wants = {
        "5xx ratio per route": r"router_requests_total\{status=~\"5\.\.",
        "502/504 per route": r"502\|504",
        "429 per provider": r"sum by \(provider\) \(rate\(router_rate_limited_total",
        "every member cooling": r"router_cooldown_active",
        "reload failures": r"router_config_reloads_total\{result=\"failure\"\}",
        "overhead p99 > 5 ms": r"histogram_quantile\(0\.99, .*router_overhead_seconds_bucket.*\) > 0\.005",
        "spend per key": r"sum by \(key\) \(rate\(router_spend_usd_total",
        "no scrape": r"up\{job=\"asgi-router\"\} == 0",
        "state backend errors": r"router_state_errors_total",
    }
    for what, pattern in wants.items():
        assert any(re.search(pattern, e, re.DOTALL) for e in used.values()), f"no alert for {what}"


# ------------------------------------------------------------------ prometheus and provisioning
def test_prometheus_scrape_config() -> None:
    cfg = load_yaml(PROMETHEUS)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    job = jobs[SCRAPE_JOB]
    assert job["scrape_interval"] == "15s" and job["metrics_path"] == "/metrics"
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["127.0.0.1:4000"]
    rule_files = [PROMETHEUS.parent / f for f in cfg["rule_files"]]  # relative to the config file
    assert ALERTS in rule_files and all(f.exists() for f in rule_files)


def test_grafana_provisioning() -> None:
    ds = load_yaml(DS_PROVISIONING)
    assert ds["apiVersion"] == 1
    (prom,) = ds["datasources"]
    assert prom["type"] == "prometheus" and prom["url"].startswith("http")
    assert prom["jsonData"]["timeInterval"] == load_yaml(PROMETHEUS)["scrape_configs"][0]["scrape_interval"]
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["current"]["value"] == prom["uid"], "the dashboard defaults elsewhere"
    dash = load_yaml(DASH_PROVISIONING)
    assert dash["apiVersion"] == 1
    (provider,) = dash["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_readme_documents_every_alert() -> None:
    readme = (GRAFANA / "README.md").read_text(encoding="utf-8")
    assert "prometheus --config.file=grafana/prometheus/prometheus.yml" in readme
    for r in alert_rules():
        assert r["alert"] in readme, f"{r['alert']} is not explained in grafana/README.md"


def test_contract_table_matches_the_implementation() -> None:
    """This file's copy of CONTRACT §4 is what the gateway declares (names, types, labels)."""
    from asgi_router.metrics import Metrics

    collectors: list[Any] = list(Metrics().registry._collector_to_names)
    declared = {
        c._name + ("_total" if c._type == "counter" else ""): (c._type, frozenset(c._labelnames))
        for c in collectors
    }
    assert declared == CONTRACT


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH")
def test_promtool_accepts_config_and_rules() -> None:
    for args in (["check", "config", str(PROMETHEUS)], ["check", "rules", str(ALERTS)]):
        proc = subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
