#!/usr/bin/env python3
"""Checks deploy/kubernetes; run by scripts/check-deploy, which installs what it needs.

For the base and every overlay: renders it with `kubectl kustomize`, validates every
object against Kubernetes' OpenAPI schema (kubernetes-validate, strict: unknown fields
are errors) and every custom resource against its CRD's schema (crd.mjs), then checks
what a schema cannot: that the objects refer to each other correctly, that the pod
template is what README.md says it is, and that the config the pods would load passes
`pgmux check` (by running the init container's own command, with its mounts mapped
to a temporary directory). Finally it checks that a change of the config or of the
credentials changes the pod template (so the pods roll), using the override shown in
README.md.

Usage: validate.py --kubectl KUBECTL --pgmux PGMUX --node-modules DIR [--k8s 1.37]
"""

import argparse
import base64
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy" / "kubernetes"
HERE = Path(__file__).resolve().parent

# PostgreSQL's default max_connections is 100, 3 of them reserved for superusers; the
# rest leaves room for the replica monitor's connections and other clients.
SERVER_CONNECTION_BUDGET = 90

errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def render(kubectl, path):
    r = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"kubectl kustomize {path} failed:\n{r.stderr}")
    return [o for o in yaml.safe_load_all(r.stdout) if o]


def seconds(d):
    """pgmux's durations: 500ms, 5s, 10m, 1h; a bare number is seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(d))
    if not m:
        raise ValueError(f"not a duration: {d!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def host_of(addr):
    return str(addr).rsplit(":", 1)[0].strip("[]")


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind, where):
    found = by_kind(objs, kind)
    if len(found) != 1:
        fail(where, f"expected one {kind}, found {len(found)}")
        return None
    return found[0]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def metric_names_in_source():
    names = set()
    for f in (REPO / "src" / "metrics").glob("*.rs"):
        names |= set(re.findall(r'"(pgmux_[a-z_]+)"', f.read_text()))
    return names


def validate_schemas(name, objs, versions, node, node_modules):
    """Kubernetes kinds against the bundled schemas; the rest through crd.mjs."""
    custom = []
    for o in objs:
        what = f"{name}: {o['kind']}/{o['metadata']['name']}"
        for version in versions:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except SchemaNotFoundError:
                custom.append({"file": name, "object": o})
                break
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail(what, f"does not validate against Kubernetes {version}: {path}: {e.message}")
    if custom:
        r = subprocess.run(
            [node, str(HERE / "crd.mjs"), node_modules], input=json.dumps(custom), capture_output=True, text=True
        )
        for line in r.stdout.splitlines():
            if line.startswith("ERROR"):
                fail(name, line[len("ERROR ") :])
            else:
                print(f"  {line}")
        if r.returncode != 0 and not any(l.startswith("ERROR") for l in r.stdout.splitlines()):
            fail(name, f"crd.mjs failed: {r.stderr.strip()}")
    return len(custom)


def mapped(text, mapping):
    """text with each mount path replaced by its directory in tmp: longest first, and
    only where it is a whole path prefix (followed by / or the end of a word)."""
    for mount in sorted(mapping, key=len, reverse=True):
        text = re.sub(re.escape(mount) + r"(?=/|\s|$|;|&|\))", mapping[mount].replace("\\", "\\\\"), text)
    return text


def run_init_container(deploy, objs, pgmux, tmp, name):
    """Runs the init container's command with its mounts mapped into tmp and the
    built pgmux first in PATH; returns the config file the main container reads."""
    spec = deploy["spec"]["template"]["spec"]
    where = f"{name}: Deployment/{deploy['metadata']['name']}"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    cms = {o["metadata"]["name"]: o for o in by_kind(objs, "ConfigMap")}
    secrets = {o["metadata"]["name"]: o for o in by_kind(objs, "Secret")}
    inits = spec.get("initContainers", [])
    if len(inits) != 1:
        fail(where, f"expected one init container (it writes pgmux's config), found {len(inits)}")
        return None
    init = inits[0]
    mapping = {}
    for m in init.get("volumeMounts", []):
        v = volumes.get(m["name"])
        if v is None:
            fail(where, f"init container mounts unknown volume {m['name']}")
            return None
        d = tmp / ("vol-" + m["name"])
        d.mkdir(parents=True, exist_ok=True)
        if "configMap" in v:
            cm = cms.get(v["configMap"]["name"])
            if cm is None:
                fail(where, f"volume {m['name']}: no ConfigMap {v['configMap']['name']} in the rendering")
                return None
            for k, text in cm.get("data", {}).items():
                (d / k).write_text(text)
        elif "secret" in v:
            s = secrets.get(v["secret"]["secretName"])
            if s is None:
                fail(where, f"volume {m['name']}: no Secret {v['secret']['secretName']} in the rendering")
                return None
            items = {i["key"]: i["path"] for i in v["secret"].get("items", [])}
            for k, b64 in s.get("data", {}).items():
                if not items or k in items:
                    (d / items.get(k, k)).write_bytes(base64.b64decode(b64))
        elif "emptyDir" not in v:
            fail(where, f"volume {m['name']}: unexpected kind {sorted(v)}")
        mapping[m["mountPath"].rstrip("/")] = str(d)
    cmd = list(init.get("command", [])) + list(init.get("args", []))
    if cmd[:2] != ["/bin/sh", "-c"] or len(cmd) != 3:
        fail(where, f"init container command is not /bin/sh -c SCRIPT: {cmd}")
        return None
    # Paths in the script, and in the config files (fleet.secret_file), are the
    # pod's: map them into tmp.
    script = mapped(cmd[2], mapping)
    for m in init.get("volumeMounts", []):
        if "configMap" in volumes[m["name"]]:
            for f in Path(mapping[m["mountPath"].rstrip("/")]).iterdir():
                f.write_text(mapped(f.read_text(), mapping))
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    link = bindir / "pgmux"
    if not link.exists():
        link.symlink_to(Path(pgmux).resolve())
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}")
    r = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        fail(where, f"init container's command (pgmux check) failed: {r.stdout.strip()} {r.stderr.strip()}")
        return None
    print(f"  {name}: init container: {r.stdout.strip()}")
    # The main container's --config must be the file the init container wrote.
    main = spec["containers"][0]
    argv = list(main.get("command", [])) + list(main.get("args", []))
    if "--config" not in argv:
        fail(where, "main container has no --config")
        return None
    path = argv[argv.index("--config") + 1]
    mounted = [m for m in main.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounted:
        fail(where, f"main container's --config {path} is on no volume it mounts")
        return None
    m = mounted[0]
    init_mount = [x for x in init.get("volumeMounts", []) if x["name"] == m["name"]]
    if not init_mount or "emptyDir" not in volumes[m["name"]]:
        fail(where, f"--config {path}: volume {m['name']} is not the emptyDir the init container writes")
        return None
    if volumes[m["name"]]["emptyDir"].get("medium") != "Memory":
        fail(where, f"the config (with passwords) is on a volume that is not memory-backed")
    local = Path(mapping[init_mount[0]["mountPath"].rstrip("/")]) / path[len(m["mountPath"].rstrip("/")) + 1 :]
    if not local.is_file():
        fail(where, f"the init container did not write {path}")
        return None
    if local.stat().st_mode & 0o777 != 0o600:
        fail(where, f"the init container wrote {path} with mode {local.stat().st_mode & 0o777:o}, not 600")
    # pgmux check again, on the file itself, as the main container will read it.
    r = subprocess.run([pgmux, "check", "--config", str(local)], capture_output=True, text=True)
    if r.returncode != 0:
        fail(where, f"pgmux check {path}: {r.stderr.strip()}")
        return None
    return yaml.safe_load(local.read_text())


def check_rendering(name, objs, pgmux, tmp, expect_hpa, facts):
    where = name
    deploy = one(objs, "Deployment", where)
    if deploy is None:
        return
    dname = f"{name}: Deployment/{deploy['metadata']['name']}"
    spec = deploy["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    if not selects(spec["selector"].get("matchLabels"), pod_labels):
        fail(dname, "selector does not match the pod template's labels")

    hpa = by_kind(objs, "HorizontalPodAutoscaler")
    if expect_hpa:
        if "replicas" in spec:
            fail(dname, "sets replicas although an HPA scales it (apply would reset the count)")
    elif spec.get("replicas") != 3:
        fail(dname, f"replicas is {spec.get('replicas')}, README says 3")

    # Containers: image, ports, probes, security, resources.
    version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    containers = pod.get("containers", [])
    main = next((c for c in containers if c["name"] == "pgmux"), None)
    if main is None:
        fail(dname, "no container named pgmux")
        return
    ports = {p["name"]: p["containerPort"] for p in main.get("ports", [])}
    for c in containers + pod.get("initContainers", []):
        cw = f"{dname} container {c['name']}"
        if c.get("image") != f"pgmux:{version}":
            fail(cw, f"image {c.get('image')}, expected pgmux:{version} (Cargo.toml's version)")
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(cw, "root filesystem is not read-only")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(cw, "allowPrivilegeEscalation is not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(cw, "does not drop all capabilities")
        res = c.get("resources", {})
        if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory"):
            fail(cw, "no cpu/memory requests")
        if not res.get("limits", {}).get("memory"):
            fail(cw, "no memory limit")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
        fail(dname, "pod does not run as a non-root user")
    dockerfile_user = re.findall(r"^USER\s+(\d+)", (REPO / "Dockerfile").read_text(), re.M)
    if not dockerfile_user or int(dockerfile_user[-1]) != psc.get("runAsUser"):
        fail(dname, f"runAsUser {psc.get('runAsUser')} is not the Dockerfile's USER {dockerfile_user}")
    probes = {k: main.get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    want = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for k, path in want.items():
        p = probes[k]
        if not p or p.get("httpGet", {}).get("path") != path:
            fail(dname, f"{k} is not an HTTP GET of {path}")
        elif p["httpGet"].get("port") not in ("metrics", ports.get("metrics")):
            fail(dname, f"{k} is not on the metrics port")
    st = probes["startupProbe"] or {}
    facts["startup"] = st.get("periodSeconds", 10) * st.get("failureThreshold", 3)
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    if (spec.get("strategy", {}).get("type"), ru.get("maxSurge"), ru.get("maxUnavailable")) != ("RollingUpdate", 1, 0):
        fail(dname, "strategy is not a rolling update of one extra pod at a time, none unavailable")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(dname, "no RuntimeDefault seccomp profile")
    if pod.get("automountServiceAccountToken") is not False:
        fail(dname, "mounts a service account token")
    spread = {t["topologyKey"]: t["whenUnsatisfiable"] for t in pod.get("topologySpreadConstraints", [])}
    if spread != {"kubernetes.io/hostname": "DoNotSchedule", "topology.kubernetes.io/zone": "ScheduleAnyway"}:
        fail(dname, f"topology spread is {spread}, README says hostname DoNotSchedule and zone ScheduleAnyway")
    for t in pod.get("topologySpreadConstraints", []):
        if not selects(t.get("labelSelector", {}).get("matchLabels"), pod_labels):
            fail(dname, f"topology spread on {t['topologyKey']} does not select the pods")

    # Generated ConfigMap and Secret: hash-suffixed names, referred to by the pod.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    refs = [("ConfigMap", v["configMap"]["name"]) for v in volumes.values() if "configMap" in v]
    refs += [("Secret", v["secret"]["secretName"]) for v in volumes.values() if "secret" in v]
    for kind, ref in refs:
        names = [o["metadata"]["name"] for o in by_kind(objs, kind)]
        if ref not in names:
            fail(dname, f"refers to {kind} {ref}, not in the rendering ({names})")
        if not re.fullmatch(r"pgmux-(config|credentials)-[a-z0-9]{10}", ref):
            fail(dname, f"{kind} {ref} has no content hash in its name: a change would not roll the pods")
    for v in volumes.values():
        if "secret" in v:
            mode = v["secret"].get("defaultMode", 0o644)
            if not (mode & 0o004 or (psc.get("fsGroup") and mode & 0o040)):
                fail(dname, f"Secret volume {v['name']} (mode {mode:o}) is not readable by the pod's user")
    if len(set(refs)) != 2 or {k for k, _ in refs} != {"ConfigMap", "Secret"}:
        fail(dname, f"expected volumes of one ConfigMap and one Secret, found {refs}")

    # Services.
    services = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    for sname, s in services.items():
        sw = f"{name}: Service/{sname}"
        if not selects(s["spec"].get("selector"), pod_labels):
            fail(sw, "selector does not match the pods")
        for p in s["spec"].get("ports", []):
            tp = p.get("targetPort")
            if (isinstance(tp, str) and tp not in ports) or (isinstance(tp, int) and tp not in ports.values()):
                fail(sw, f"port {p['name']}: targetPort {tp} is no container port")
    clients = services.get("pgmux")
    if not clients or clients["spec"].get("type", "ClusterIP") != "ClusterIP" or clients["spec"].get("clusterIP") == "None":
        fail(name, "no ClusterIP Service pgmux for clients")
    elif not any(p.get("targetPort") == "postgres" for p in clients["spec"]["ports"]):
        fail(name, "Service pgmux does not forward to the postgres port")
    peers = services.get("pgmux-peers")
    if not peers or peers["spec"].get("clusterIP") != "None" or peers["spec"].get("publishNotReadyAddresses") is not True:
        fail(name, "no headless Service pgmux-peers publishing not-ready addresses")

    # PodDisruptionBudget.
    pdb = one(objs, "PodDisruptionBudget", name)
    if pdb and not selects(pdb["spec"].get("selector", {}).get("matchLabels"), pod_labels):
        fail(name, "PodDisruptionBudget does not select the pods")
    if pdb and (pdb["spec"].get("maxUnavailable"), pdb["spec"].get("unhealthyPodEvictionPolicy")) != (1, "AlwaysAllow"):
        fail(name, "PodDisruptionBudget is not maxUnavailable 1 with unhealthyPodEvictionPolicy AlwaysAllow")

    # The config the pods load.
    cfg = run_init_container(deploy, objs, pgmux, tmp / name.replace("/", "_"), name)
    if cfg is None:
        return
    if host_of(cfg.get("listen", "127.0.0.1:6432")) in ("127.0.0.1", "localhost", "::1"):
        fail(name, f"listen {cfg.get('listen')} is loopback: other pods cannot connect")
    if port_of(cfg.get("listen", "127.0.0.1:6432")) != ports.get("postgres"):
        fail(name, f"listen {cfg.get('listen')} is not the container port postgres ({ports.get('postgres')})")
    if not cfg.get("metrics_listen") or port_of(cfg["metrics_listen"]) != ports.get("metrics"):
        fail(name, f"metrics_listen {cfg.get('metrics_listen')} is not the container port metrics ({ports.get('metrics')})")
    elif host_of(cfg["metrics_listen"]) in ("127.0.0.1", "localhost", "::1"):
        fail(name, "metrics_listen is loopback: the kubelet's probes and Prometheus cannot reach it")
    shutdown = seconds(cfg.get("shutdown_timeout", "30s"))
    drain = seconds(cfg.get("drain_delay", "0s"))
    pre_stop = main.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace > pre_stop + drain + shutdown:
        fail(dname, f"terminationGracePeriodSeconds {grace} is not longer than preStop {pre_stop} s + drain_delay {drain:g} s + shutdown_timeout {shutdown:g} s")
    if not drain and not pre_stop:
        fail(dname, "neither drain_delay nor a preStop sleep: a pod stops accepting before the Service forgets it")
    facts["drain"] = f"grace {grace} s > preStop {pre_stop} s + drain_delay {drain:g} s + shutdown_timeout {shutdown:g} s"
    check_fleet(name, objs, cfg, main, pod, services)

    # Server connections per PostgreSQL server: pods x the databases' max_db_connections.
    pool = cfg.get("pool", {})
    per_pod = 0
    for dbname, db in cfg.get("databases", {}).items():
        limit = db.get("max_db_connections", pool.get("max_db_connections", 0))
        if not limit:
            fail(name, f"database {dbname} has no max_db_connections: server connections per pod are unbounded")
        per_pod += limit or 0
    pods = max([h["spec"]["maxReplicas"] for h in hpa] or [spec.get("replicas", 1)])
    if (cfg.get("fleet") or {}).get("share_pools"):
        # fleet.share_pools: the limits are totals, divided among the pods.
        if per_pod > SERVER_CONNECTION_BUDGET:
            fail(name, f"the fleet's {per_pod} server connections > {SERVER_CONNECTION_BUDGET}")
        facts.setdefault("budget", {})[name] = f"shared by up to {pods} pods: {per_pod} <= {SERVER_CONNECTION_BUDGET}"
    else:
        if pods * per_pod > SERVER_CONNECTION_BUDGET:
            fail(name, f"{pods} pods x {per_pod} server connections = {pods * per_pod} > {SERVER_CONNECTION_BUDGET}")
        facts.setdefault("budget", {})[name] = f"{pods} pods x {per_pod} = {pods * per_pod} <= {SERVER_CONNECTION_BUDGET}"
    if name == "base":
        res = main["resources"]
        facts["numbers"] = {
            "replicas": spec.get("replicas"),
            "version": version,
            "drain": f"{drain:g}",
            "shutdown": f"{shutdown:g}",
            "grace": grace,
            "uid": psc.get("runAsUser"),
            "cpu": res["requests"]["cpu"],
            "mem_req": res["requests"]["memory"].replace("Mi", " MiB"),
            "mem_lim": res["limits"]["memory"].replace("Mi", " MiB"),
            "listen": cfg.get("listen"),
            "metrics_listen": cfg.get("metrics_listen"),
            "max_db": pool.get("max_db_connections"),
            "per_pod": per_pod,
            "shared": bool((cfg.get("fleet") or {}).get("share_pools")),
        }

    # ServiceMonitor: selects exactly the headless Service, on a port it has.
    for sm in by_kind(objs, "ServiceMonitor"):
        sw = f"{name}: ServiceMonitor/{sm['metadata']['name']}"
        sel = sm["spec"]["selector"].get("matchLabels", {})
        chosen = [s for s in services.values() if selects(sel, s["metadata"].get("labels", {}))]
        if [s["metadata"]["name"] for s in chosen] != ["pgmux-peers"]:
            fail(sw, f"selects Services {[s['metadata']['name'] for s in chosen]}, expected only pgmux-peers")
        for ep in sm["spec"]["endpoints"]:
            for s in chosen:
                if ep.get("port") not in [p["name"] for p in s["spec"]["ports"]]:
                    fail(sw, f"endpoint port {ep.get('port')} is not a port of Service {s['metadata']['name']}")

    # HPA: targets the Deployment, on the metric the adapter rule serves.
    if expect_hpa and len(hpa) != 1:
        fail(name, f"expected one HorizontalPodAutoscaler, found {len(hpa)}")
    if hpa and not by_kind(objs, "ServiceMonitor"):
        fail(name, "an HPA on a Prometheus metric, but nothing makes Prometheus scrape pgmux")
    for h in hpa:
        hw = f"{name}: HorizontalPodAutoscaler/{h['metadata']['name']}"
        ref = h["spec"]["scaleTargetRef"]
        if (ref["apiVersion"], ref["kind"], ref["name"]) != ("apps/v1", "Deployment", deploy["metadata"]["name"]):
            fail(hw, f"scaleTargetRef {ref} is not the Deployment")
        rules = yaml.safe_load((DEPLOY / "components" / "hpa" / "prometheus-adapter-rules.yaml").read_text())["rules"]
        served = {r["name"]["as"]: r for r in rules}
        for m in h["spec"].get("metrics", []):
            if m["type"] != "Pods":
                fail(hw, f"metric type {m['type']}: README speaks of a per-pod custom metric")
                continue
            mname = m["pods"]["metric"]["name"]
            if mname not in served:
                fail(hw, f"metric {mname} is not served by prometheus-adapter-rules.yaml ({sorted(served)})")
        if h["spec"]["minReplicas"] < 3:
            fail(hw, "minReplicas below 3")
        facts["hpa"] = {
            "min": h["spec"]["minReplicas"],
            "max": h["spec"]["maxReplicas"],
            "target": h["spec"]["metrics"][0]["pods"]["target"].get("averageValue"),
            "api": h["apiVersion"],
            "behavior": h["spec"].get("behavior", {}),
        }
    for sm in by_kind(objs, "ServiceMonitor"):
        facts["scrape"] = sm["spec"]["endpoints"][0].get("interval", "").replace("s", " s")


def check_fleet(name, objs, cfg, main, pod, services):
    """fleet.peers_dns names the headless Service that publishes every pod, on the
    client port; fleet.secret_file is on a volume the pgmux container mounts."""
    fleet = cfg.get("fleet")
    if not fleet:
        return
    host, _, port = (fleet.get("peers_dns") or "").rpartition(":")
    svc = services.get(host.split(".")[0])
    if svc is None or svc["spec"].get("clusterIP") != "None" or not svc["spec"].get("publishNotReadyAddresses"):
        fail(name, f"fleet.peers_dns {fleet.get('peers_dns')}: not a headless Service publishing not-ready pods")
    elif int(port or 0) not in [p["port"] for p in svc["spec"]["ports"] if p.get("targetPort") == "postgres"]:
        fail(name, f"fleet.peers_dns {fleet.get('peers_dns')}: not the Service's port for the client port")
    # The path as the pod sees it (cfg has it mapped into tmp).
    cm = yaml.safe_load(next(iter(by_kind(objs, "ConfigMap")))["data"]["pgmux.yaml"])
    path = (cm.get("fleet") or {}).get("secret_file")
    if path:
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        on = [m for m in main.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
        if not on or "secret" not in vols[on[0]["name"]]:
            fail(name, f"fleet.secret_file {path} is on no Secret the pgmux container mounts")


def check_adapter_rules():
    where = "components/hpa/prometheus-adapter-rules.yaml"
    rules = yaml.safe_load((DEPLOY / "components" / "hpa" / "prometheus-adapter-rules.yaml").read_text())["rules"]
    known = metric_names_in_source()
    for r in rules:
        series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", r["seriesQuery"]).group(1)
        if series not in known:
            fail(where, f"series {series} is not a pgmux metric (src/metrics)")
        if not re.search(r["name"]["matches"], series):
            fail(where, f"name.matches {r['name']['matches']} does not match {series}")
        for label in ("namespace", "pod"):
            if label not in r["resources"]["overrides"]:
                fail(where, f"no resource override for the {label} label")
        for needed in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            if needed not in r["metricsQuery"]:
                fail(where, f"metricsQuery lacks {needed}")
    return known


def check_metric_mentions(known):
    """Every pgmux_* name in deploy/kubernetes and README's Kubernetes section is a
    real series (or the adapter's name for one)."""
    rules = yaml.safe_load((DEPLOY / "components" / "hpa" / "prometheus-adapter-rules.yaml").read_text())["rules"]
    aliases = {r["name"]["as"] for r in rules}
    readme = (REPO / "README.md").read_text()
    m = re.search(r"^## Kubernetes\n(.*?)(?=^## )", readme, re.M | re.S)
    if not m:
        fail("README.md", "no '## Kubernetes' section")
        texts = []
    else:
        texts = [("README.md (Kubernetes)", m.group(1))]
    for f in DEPLOY.rglob("*"):
        if f.is_file() and f.suffix in (".yaml", ".yml") and "node_modules" not in f.parts:
            texts.append((str(f.relative_to(REPO)), f.read_text()))
    for where, text in texts:
        for name in set(re.findall(r"\bpgmux_[a-z_]+", text)):
            if name not in known and name not in aliases:
                fail(where, f"mentions {name}, which pgmux does not export")
    return m.group(1) if m else ""


def check_rolls(kubectl, pgmux, readme_section, tmp):
    """A changed config, or credentials replaced as README shows, change the pod
    template's references, so the Deployment rolls."""
    copy = tmp / "roll" / "deploy-kubernetes"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("node_modules"))

    def refs(path):
        objs = render(kubectl, path)
        d = one(objs, "Deployment", str(path))
        vols = d["spec"]["template"]["spec"]["volumes"]
        return {
            "config": next(v["configMap"]["name"] for v in vols if "configMap" in v),
            "secret": next(v["secret"]["secretName"] for v in vols if "secret" in v),
        }, objs

    before, _ = refs(copy / "base")
    cfg = copy / "base" / "pgmux.yaml"
    text = cfg.read_text()
    changed = re.sub(r"(?m)^(  size:) (\d+)$", lambda m: f"{m[1]} {int(m[2]) + 1}", text)
    if changed == text:
        fail("roll test", "base/pgmux.yaml has no '  size: N' line to change")
    cfg.write_text(changed)
    after, _ = refs(copy / "base")
    if after["config"] == before["config"]:
        fail("roll test", "changing pgmux.yaml did not change the ConfigMap's name in the pod template")

    # README's example overlay: the credentials replaced.
    blocks = re.findall(r"```yaml\n(.*?)```", readme_section, re.S)
    overlay = [b for b in blocks if "behavior: replace" in b and "kind: Kustomization" in b]
    users = [b for b in blocks if b.lstrip().startswith("users:") or "\nusers:" in b]
    if not overlay or not users:
        fail("README.md", "the Kubernetes section shows no overlay that replaces the credentials (yaml blocks)")
        return
    prod = copy / "overlays" / "production"
    prod.mkdir(parents=True)
    (prod / "kustomization.yaml").write_text(overlay[0])
    (prod / "users.yaml").write_text(users[0])
    (prod / "fleet-secret").write_text(os.urandom(16).hex() + "\n")
    mine, objs = refs(prod)
    if mine["secret"] == after["secret"]:
        fail("roll test", "README's overlay did not change the Secret's name in the pod template")
    secret = next(o for o in by_kind(objs, "Secret") if o["metadata"]["name"] == mine["secret"])
    if base64.b64decode(secret["data"]["users.yaml"]).decode() != users[0]:
        fail("roll test", "README's overlay: the Secret does not hold its users.yaml")
    d = one(objs, "Deployment", "README overlay")
    image = d["spec"]["template"]["spec"]["containers"][0]["image"]
    cfgfile = run_init_container(d, objs, pgmux, tmp / "roll" / "init", "README's overlay")
    if cfgfile is not None:
        print(f"  README's production overlay: image {image}, Secret {mine['secret']}, config passes pgmux check")


def check_readme_numbers(section, facts):
    """The figures README.md's Kubernetes section gives are those of the manifests."""
    n, h = facts.get("numbers"), facts.get("hpa")
    if not n or not h or not section:
        fail("README.md", "cannot compare the Kubernetes section's figures (a rendering failed)")
        return
    text = " ".join(section.split())
    phrases = [
        f"| Deployment `pgmux` | {n['replicas']} pods",
        f"`pgmux:{n['version']}`",
        f"startup probe: `/healthz`, up to {facts['startup']} s",
        f"listens on `{n['listen']}`, metrics on `{n['metrics_listen']}`",
        f"accepting for `drain_delay` ({n['drain']} s)",
        f"for up to `shutdown_timeout` ({n['shutdown']} s)",
        f"`terminationGracePeriodSeconds` ({n['grace']})",
        f"Pods run as user {n['uid']}",
        f"Requests {n['cpu']} CPU and {n['mem_req']}, limit {n['mem_lim']}",
        f"(`pool.max_db_connections`) ({n['max_db']} in the base)".replace("(`pool", "`pool").replace("`) (", "` ("),
        (f"{n['per_pod']} per server for the whole fleet, however many pods"
         if n["shared"] else f"{n['replicas'] * n['per_pod']} for {n['replicas']} pods, {h['max'] * n['per_pod']} at the HPA's {h['max']}"),
        f"checked against {SERVER_CONNECTION_BUDGET}",
        f"(`{h['api']}`, {h['min']} to {h['max']} pods)",
        f"at {h['target']} per pod on average",
        f"every {facts.get('scrape')}",
    ]
    up, down = h["behavior"].get("scaleUp", {}), h["behavior"].get("scaleDown", {})
    if [(p["type"], p["value"], p["periodSeconds"]) for p in up.get("policies", [])] == [("Pods", 1, 60)]:
        phrases.append("adds at most one pod a minute")
    else:
        fail("README.md (Kubernetes)", "says the HPA adds at most one pod a minute: its scaleUp policy differs")
    if [(p["type"], p["value"], p["periodSeconds"]) for p in down.get("policies", [])] == [("Pods", 1, 120)]:
        phrases.append(f"removes one every 2 minutes after {down.get('stabilizationWindowSeconds', 300) // 60} minutes below target")
    else:
        fail("README.md (Kubernetes)", "says the HPA removes one pod every 2 minutes: its scaleDown policy differs")
    for p in phrases:
        if p not in text:
            fail("README.md (Kubernetes)", f"does not say \"{p}\", as the manifests have it")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--pgmux", required=True)
    ap.add_argument("--node", default="node")
    ap.add_argument("--node-modules", required=True)
    # The oldest Kubernetes README.md says the manifests need, and the newest the
    # schemas know.
    latest = kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version())
    ap.add_argument("--k8s", default=f"1.30,{latest}")
    a = ap.parse_args()

    targets = [DEPLOY / "base"] + sorted(p.parent for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
    counts = {}
    facts = {}
    known = check_adapter_rules()
    readme_section = check_metric_mentions(known)
    with tempfile.TemporaryDirectory(prefix="pgmux-check-deploy-") as t:
        tmp = Path(t)
        for target in targets:
            name = str(target.relative_to(DEPLOY))
            objs = render(a.kubectl, target)
            custom = validate_schemas(name, objs, a.k8s.split(","), a.node, a.node_modules)
            counts[name] = (collections.Counter(o["kind"] for o in objs), custom)
            print(f"{name}: {len(objs)} objects rendered and validated")
            check_rendering(name, objs, a.pgmux, tmp, expect_hpa=target.name == "hpa", facts=facts)
        check_rolls(a.kubectl, a.pgmux, readme_section, tmp)
    check_readme_numbers(readme_section, facts)

    for name, (c, custom) in counts.items():
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(c.items()))
        print(f"  {name}: {sum(c.values())} objects ({kinds}); {sum(c.values()) - custom} against Kubernetes {' and '.join(a.k8s.split(','))} (strict), {custom} against their CRD")
    for name, b in facts.get("budget", {}).items():
        print(f"  server connections per PostgreSQL server, {name}: {b}")
    if "drain" in facts:
        print(f"  shutdown: {facts['drain']}")
    if errors:
        print(f"\ncheck-deploy: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
