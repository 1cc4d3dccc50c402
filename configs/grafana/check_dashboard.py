#!/usr/bin/env python3
"""Checks a Grafana dashboard's PromQL against a real pgmux scrape.

    python3 configs/grafana/check_dashboard.py configs/grafana/dashboards/pgmux.json metrics.txt

metrics.txt is the body of `curl -s http://127.0.0.1:9930/metrics` taken while pgmux
ran (with a little load, so that every series exists). For every expression in the
dashboard (panel targets and template-variable queries) it checks that:

- every metric name it uses is a sample name in the scrape (histograms: `_bucket`,
  `_sum`, `_count`; a bare histogram name is an error);
- every label in a selector exists on that metric, and a literal `label="value"` or
  `label=~"regex"` matches at least one series (`$variables` match anything);
- every label in `by (...)` / `without (...)` exists on some metric of the expression;
- `histogram_quantile` reads `_bucket` series and keeps `le`;
- counters (and histogram series) go through `rate`/`increase`, gauges do not.

It also checks that every datasource uid used is the one provisioned in
../provisioning/datasources/*.yml (when that directory exists), that panel ids are
unique and that panels do not overlap. Exit status 0 when all is well, 1 otherwise.
Standard library only.
"""

import json
import os
import re
import sys

IDENT = r"[A-Za-z_:][A-Za-z0-9_:]*"
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
KEYWORDS = {"bool", "and", "or", "unless", "offset", "inf", "nan", "by", "without", "on",
            "ignoring", "group_left", "group_right", "atmodifier"}
RANGE_FUNCS = ("rate(", "increase(", "irate(", "delta(", "idelta(", "deriv(")


def parse_scrape(text):
    """{sample name: [label dicts]}, {family name: type}."""
    series, types = {}, {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(%s)(\{(.*)\})?\s" % IDENT, line)
        if not m:
            raise SystemExit(f"cannot parse scrape line: {line}")
        labels = dict((k, v) for k, _, v in MATCHER.findall(m.group(3) or ""))
        series.setdefault(m.group(1), []).append(labels)
    return series, types


def kind_of(name, types):
    """counter, gauge, histogram (for _bucket/_sum/_count) or None."""
    if name in types:
        return types[name]
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return "histogram"
    return None


def expressions(dash):
    """(where, expr, is_label_values) for every query in the dashboard."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f'panel {p.get("id")} "{p.get("title")}" {t.get("refId")}', t["expr"], False))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if q:
            out.append((f'variable ${v["name"]}', q, True))
    return out


def grafana_vars(expr):
    """Grafana's interval variables become a duration, the others a marker that matches anything."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}", "1m", expr)
    return re.sub(r"\$\{\w+(:\w+)?\}|\$\w+", "$VAR", expr)


def check_expr(expr, label_values, series, types):
    """A list of problems with one expression (empty when it is fine), and its metric names."""
    problems = []
    e = grafana_vars(expr)
    extra_label = None
    if label_values:
        m = re.fullmatch(r"\s*label_values\(\s*(.*?)\s*,\s*(\w+)\s*\)\s*", e)
        if not m:
            return [f"not a label_values(selector, label) query: {expr}"], []
        e, extra_label = m.group(1), m.group(2)

    metrics = []  # (name, [(label, op, value)])
    for m in re.finditer(r"(%s)?\s*\{([^}]*)\}" % IDENT, e):
        if not m.group(1):
            problems.append(f"selector without a metric name: {{{m.group(2)}}}")
            continue
        metrics.append((m.group(1), MATCHER.findall(m.group(2))))
    rest = re.sub(r"\{[^}]*\}", " ", e)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    grouping = []
    for m in GROUPING.finditer(rest):
        if m.group(1) in ("by", "without", "on", "ignoring"):
            grouping += [g.strip() for g in m.group(2).split(",") if g.strip()]
    rest = GROUPING.sub(" ", rest)
    braced = {n for n, _ in metrics}
    for m in re.finditer(IDENT, rest):
        word = m.group(0)
        before = rest[: m.start()]
        if before and (before[-1].isdigit() or before[-1] == "."):
            continue  # part of a number such as 1e-9
        if re.match(r"\s*\(", rest[m.end():]) or word.lower() in KEYWORDS or word in braced:
            continue
        metrics.append((word, []))

    if not metrics:
        problems.append("no metric in expression")
    for name, matchers in metrics:
        if name not in series:
            hint = " (a histogram: use _bucket, _sum or _count)" if types.get(name) == "histogram" else ""
            problems.append(f"metric {name} is not in the scrape{hint}")
            continue
        have = series[name]
        for label, op, value in matchers:
            if not any(label in s for s in have):
                problems.append(f"{name} has no label {label}")
                continue
            if "$VAR" in value or op in ("!=", "!~"):
                continue
            if op == "=" and not any(s.get(label) == value for s in have):
                problems.append(f'{name}{{{label}="{value}"}} matches no series')
            if op == "=~" and not any(re.fullmatch(value, s.get(label, "")) for s in have):
                problems.append(f'{name}{{{label}=~"{value}"}} matches no series')
        kind = kind_of(name, types)
        ranged = any(f in e for f in RANGE_FUNCS)
        if kind in ("counter", "histogram") and not ranged and not label_values:
            problems.append(f"{name} is a {kind} series but is not read through rate()/increase()")
        if kind == "gauge" and ranged:
            problems.append(f"{name} is a gauge but the expression takes a rate/increase")
    if extra_label:
        grouping.append(extra_label)
    known = [n for n, _ in metrics if n in series]
    for label in grouping:
        if known and not any(label in s for n in known for s in series[n]):
            problems.append(f"grouping label {label} is on none of {', '.join(sorted(set(known)))}")
    if "histogram_quantile" in e:
        if not any(n.endswith("_bucket") for n, _ in metrics):
            problems.append("histogram_quantile without a _bucket series")
        if "le" not in grouping:
            problems.append("histogram_quantile but the aggregation drops le")
    return problems, sorted({n for n, _ in metrics})


def check_layout(dash):
    problems, ids, boxes = [], {}, []

    def walk(panels):
        for p in panels:
            pid = p.get("id")
            if pid in ids:
                problems.append(f'panel id {pid} used twice ("{ids[pid]}", "{p.get("title")}")')
            ids[pid] = p.get("title")
            g = p.get("gridPos", {})
            boxes.append((p.get("title"), g.get("x", 0), g.get("y", 0), g.get("w", 0), g.get("h", 0)))
            if g.get("x", 0) + g.get("w", 0) > 24:
                problems.append(f'panel "{p.get("title")}" is wider than the grid')
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for i, (ta, xa, ya, wa, ha) in enumerate(boxes):
        for tb, xb, yb, wb, hb in boxes[i + 1:]:
            if xa < xb + wb and xb < xa + wa and ya < yb + hb and yb < ya + ha:
                problems.append(f'panels "{ta}" and "{tb}" overlap')
    return problems


def check_datasources(dash, dashboard_path):
    prov = os.path.join(os.path.dirname(os.path.abspath(dashboard_path)), "..", "provisioning", "datasources")
    if not os.path.isdir(prov):
        return [], None
    uids = set()
    for f in os.listdir(prov):
        if f.endswith((".yml", ".yaml")):
            uids |= set(re.findall(r"^\s*uid:\s*['\"]?([\w-]+)", open(os.path.join(prov, f)).read(), re.M))
    used = set()

    def walk(obj):
        if isinstance(obj, dict):
            ds = obj.get("datasource")
            if isinstance(ds, dict) and ds.get("type") != "grafana" and ds.get("uid"):
                used.add(ds["uid"])
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(dash)
    return [f"datasource uid {u} is not provisioned (have: {', '.join(sorted(uids))})" for u in sorted(used - uids)], uids


def main():
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} DASHBOARD.json METRICS.txt")
    dash = json.load(open(sys.argv[1]))
    series, types = parse_scrape(open(sys.argv[2]).read())
    failed = 0
    used = set()
    exprs = expressions(dash)
    for where, expr, lv in exprs:
        problems, names = check_expr(expr, lv, series, types)
        used |= set(names)
        if problems:
            failed += 1
            print(f"FAIL {where}: {expr}")
            for p in problems:
                print(f"     - {p}")
        else:
            print(f"ok   {where}: {', '.join(names)}")
    other = check_layout(dash)
    ds_problems, uids = check_datasources(dash, sys.argv[1])
    other += ds_problems
    for p in other:
        print(f"FAIL {p}")
    unused = sorted(n for n in series if n.startswith("pgmux_") and n not in used)
    print(f"\n{len(exprs)} expressions, {len(used)} distinct series names used, "
          f"{len(series)} in the scrape; datasource uids {sorted(uids) if uids else 'not checked'}")
    if unused:
        print("in the scrape but on no panel: " + ", ".join(unused))
    if failed or other:
        print(f"FAILED: {failed} expression(s), {len(other)} other problem(s)")
        sys.exit(1)
    print("all expressions use metrics and labels present in the scrape")


if __name__ == "__main__":
    main()
