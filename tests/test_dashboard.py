"""docs/grafana/videoalign_dashboard.json, statically: it loads, uses Ray's ``${datasource}`` convention, every
panel queries only metrics the online job defines (read from the ``Metrics`` class, not from the JSON) and
says its unit and legend. That the job really exports them: tests/test_online_loop.py (end to end)."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

from tests.prometheus import panel_metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana" / "videoalign_dashboard.json"


def defined_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exported name -> (Gauge or Counter, tag keys) for every metric the ``Metrics`` class creates: each
    ``Gauge(...)`` / ``Counter(...)`` call of its source is evaluated in its module (a comprehension around the
    call is evaluated whole). Ray exports ``ray.util.metrics`` with the prefix ``ray_`` and no other suffix:
    a Counter named ``videoalign_videos_total`` is scraped as ``ray_videoalign_videos_total`` (measured on
    Ray 2.60)."""
    module = "actors.run" if (ROOT / "actors" / "run.py").is_file() else "jobs.online_dpo"
    mod = importlib.import_module(module)
    tree = ast.parse(inspect.getsource(mod.Metrics))
    comps = {}  # call node -> the comprehension that builds it
    for node in ast.walk(tree):
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            for sub in ast.walk(node):
                comps[id(sub)] = node
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("Gauge", "Counter")
        ):
            continue
        name = node.args[0] if node.args else next(k.value for k in node.keywords if k.arg == "name")
        tags = next((k.value for k in node.keywords if k.arg == "tag_keys"), ast.Constant(()))
        pair = f"({ast.unparse(name)}, tuple({ast.unparse(tags)}))"
        comp = comps.get(id(node))
        if comp is not None:
            loops = " ".join(
                f"for {ast.unparse(g.target)} in {ast.unparse(g.iter)}"
                + "".join(f" if {ast.unparse(c)}" for c in g.ifs)
                for g in comp.generators
            )
            pairs = eval(f"[{pair} {loops}]", vars(mod))  # the project's own source
        else:
            pairs = [eval(pair, vars(mod))]
        for metric, tag_keys in pairs:
            out["ray_" + metric] = (node.func.id, tag_keys)
    assert out, f"no Gauge/Counter found in {module}.Metrics"
    return out


@pytest.fixture(scope="module")
def dash() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> list[dict]:
    out, stack = [], list(dash["panels"])
    while stack:
        p = stack.pop(0)
        stack.extend(p.get("panels", []))  # a collapsed row holds its panels
        if p.get("type") != "row":
            out.append(p)
    return out


def test_defined_metrics_are_the_ones_the_job_documents():
    """The reader of the Metrics class finds the gauges and the counter named in jobs/README.md and the
    tag keys the panels group by."""
    got = defined_metrics()
    for short in ("reward", "oracle", "loss", "implicit_accuracy", "videos_per_second", "phase_seconds"):
        assert got[f"ray_videoalign_{short}"][0] == "Gauge"
    assert got["ray_videoalign_videos_total"] == ("Counter", ())
    assert got["ray_videoalign_reward"][1] == ("dimension",)
    assert got["ray_videoalign_phase_seconds"][1] == ("phase",)
    assert got["ray_videoalign_policy_version"][1] == ()


def test_dashboard_loads_with_rays_datasource_variable(dash):
    """Importable next to Ray's generated dashboards: a ``datasource`` variable of type prometheus, and every
    panel and target queries ``${datasource}``; a uid, a title and unique panel ids and grid positions."""
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert dash["uid"] and dash["title"]
    ps = panels(dash)
    assert len(ps) >= 8
    assert len({p["id"] for p in ps}) == len(ps)
    cells = set()
    for p in ps:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        for ref in [p["datasource"], *(t.get("datasource", p["datasource"]) for t in p["targets"])]:
            uid = ref["uid"] if isinstance(ref, dict) else ref
            assert uid in ("${datasource}", "$datasource"), p["title"]
    # every other variable used in a query is defined
    used = {m for p in ps for t in p["targets"] for m in re.findall(r"\$\{?(\w+)", t["expr"])}
    assert used <= set(variables) | {"__rate_interval", "__interval", "__range"}, used - set(variables)


def test_every_panel_queries_defined_metrics_with_unit_and_legend(dash):
    defined = defined_metrics()
    for p in panels(dash):
        title = p["title"]
        assert p["targets"], f"{title}: no target"
        assert p["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        legend = p["options"]["legend"]
        assert legend["showLegend"] is True and legend["displayMode"] in ("list", "table"), title
        for t in p["targets"]:
            names = set(re.findall(r"\bray_videoalign_\w+", t["expr"]))
            assert names, f"{title}: {t['expr']} queries no ray_videoalign_* metric"
            assert names <= set(defined), f"{title}: {names - set(defined)} is not defined by Metrics"
            assert t["legendFormat"].strip(), f"{title}: a target without a legend"
            # labels the query groups by and the legend names are tag keys of its metrics
            tag_keys = {k for n in names for k in defined[n][1]}
            grouped = {w.strip() for g in re.findall(r"\bby\s*\(([^)]*)\)", t["expr"]) for w in g.split(",") if w}
            legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t["legendFormat"]))
            assert grouped <= tag_keys and legend_labels <= grouped, (title, t["expr"], t["legendFormat"])
            # a counter is read through rate()/increase(), a gauge as it is
            for n in names:
                around = re.search(rf"(\w+)\s*\(\s*{n}\b", t["expr"])
                if defined[n][0] == "Counter":
                    assert around and around.group(1) in ("rate", "increase", "irate"), (title, t["expr"])


def test_dashboard_covers_every_metric_and_dimension(dash):
    """Every metric the job exports has a panel, and the per-dimension panels keep the dimension label."""
    defined = defined_metrics()
    assert panel_metrics(DASHBOARD) == set(defined), set(defined) ^ panel_metrics(DASHBOARD)
    for p in panels(dash):
        for t in p["targets"]:
            names = set(re.findall(r"\bray_videoalign_\w+", t["expr"]))
            if any("dimension" in defined[n][1] for n in names):
                assert "{{dimension}}" in t["legendFormat"], (p["title"], t["legendFormat"])


def test_panel_metrics_reads_every_target(tmp_path):
    """panel_metrics finds names in every target of every panel (rows' nested panels too), nothing else."""
    doc = {
        "panels": [
            {"targets": [{"expr": 'max(ray_videoalign_a{x="1"}) / ray_videoalign_b'}, {"expr": "ray_other"}]},
            {"type": "row", "panels": [{"targets": [{"expr": "rate(ray_videoalign_c_total[5m])"}]}]},
        ]
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(doc))
    assert panel_metrics(path) == {"ray_videoalign_a", "ray_videoalign_b", "ray_videoalign_c_total"}
