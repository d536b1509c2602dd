#!/usr/bin/env python3
"""Render and check careflow's Kubernetes manifests without kubectl or kustomize.

    python3 deploy/render.py [--k8s-version 1.30] [--out DIR] [--kubectl auto|never]

Renders deploy/k8s/base and every deploy/k8s/overlays/* the way `kustomize build` does for
the few kustomize features careflow uses (resources, namespace, generatorOptions,
configMapGenerator with files, patches with a strategic merge of the fields patched), and
refuses any other kustomization field rather than ignoring it. Then, for each rendering:

- every object is validated against the Kubernetes OpenAPI schemas of --k8s-version
  (kubernetes-validate, strict: unknown fields are errors); custom resources whose schema
  ships with their operator (monitoring.coreos.com: ServiceMonitor) are YAML-parsed and
  checked for the fields careflow sets, and the skipped schema check is printed;
- references resolve: Service, PodDisruptionBudget and ServiceMonitor selectors select a pod
  template (and a named port), HPA targets exist, ConfigMap and PVC volumes exist;
- no Secret objects and no literal values for secret-like variables (keys, passwords,
  tokens, database URLs come from Secrets by reference);
- every pod meets the basics of the "restricted" Pod Security Standard the namespace
  enforces (non-root, no privilege escalation, all capabilities dropped, RuntimeDefault
  seccomp);
- the ConfigMap's careflow.toml parses, and the Grafana dashboard JSON parses, has the
  panels careflow documents, and names only metrics the gateway registers;
- where `kubectl kustomize` exists, its rendering must equal this one, object for object.

Exits non-zero on the first file that cannot be read and after all checks if any failed.
Needs PyYAML and kubernetes-validate (scripts/check-deploy.sh installs them in a venv).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"

# Kinds that kustomize does not namespace.
CLUSTER_SCOPED = {
    "Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
    "CustomResourceDefinition", "PriorityClass", "IngressClass", "RuntimeClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
}
# API groups whose schemas are not part of Kubernetes (CRDs): parsed, not schema-validated.
CRD_GROUPS = {"monitoring.coreos.com"}
# Strategic-merge keys of the lists careflow patches (Kubernetes' patchMergeKey).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "volumeMounts": "mountPath",
    "imagePullSecrets": "name", "volumeClaimTemplates": None,
}
KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "resources", "namespace", "generatorOptions",
    "configMapGenerator", "patches",
}
SECRET_LIKE = re.compile(r"(KEY|PASSWORD|TOKEN|SECRET|DATABASE_URL)", re.I)
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


class RenderError(Exception):
    pass


# --------------------------------------------------------------------------------------
# Rendering.

def load_yaml_docs(path: Path) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        raise RenderError(f"{rel(path)}: {e}") from e
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise RenderError(f"{rel(path)}: a document without apiVersion and kind")
    return docs


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def inside(base: Path, path: Path, what: str) -> Path:
    """kustomize's load restrictor: files must lie under the kustomization's directory."""
    p = (base / path).resolve()
    if base.resolve() not in p.parents and p != base.resolve():
        raise RenderError(f"{rel(base)}: {what} `{path}` is outside the kustomization directory")
    return p


def key_of(obj: dict) -> tuple:
    md = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], md.get("namespace", ""), md.get("name", ""))


def render(directory: Path) -> list[dict]:
    kfile = directory / "kustomization.yaml"
    if not kfile.exists():
        raise RenderError(f"{rel(directory)}: no kustomization.yaml")
    k = load_yaml_docs(kfile)[0]
    unknown = set(k) - KUSTOMIZATION_FIELDS
    if unknown:
        raise RenderError(
            f"{rel(kfile)}: field(s) {sorted(unknown)} not supported by deploy/render.py "
            f"(supported: {sorted(KUSTOMIZATION_FIELDS)}); extend it, or kubectl kustomize "
            "and this renderer would disagree")
    objects: list[dict] = []
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(load_yaml_docs(inside(directory, Path(entry), "resource")))

    options = k.get("generatorOptions", {}) or {}
    for gen in k.get("configMapGenerator", []) or []:
        if not options.get("disableNameSuffixHash") and not (
                gen.get("options", {}) or {}).get("disableNameSuffixHash"):
            raise RenderError(
                f"{rel(kfile)}: configMapGenerator `{gen.get('name')}` needs "
                "disableNameSuffixHash: render.py does not compute kustomize's name hash")
        cm = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": gen["name"]}, "data": {}}
        for key in ("labels", "annotations"):
            values = {**(options.get(key) or {}), **((gen.get("options") or {}).get(key) or {})}
            if values:
                cm["metadata"][key] = values
        for f in gen.get("files", []) or []:
            name, _, src = f.partition("=") if "=" in f else (Path(f).name, "", f)
            cm["data"][name] = inside(directory, Path(src), "file").read_text()
        for lit in gen.get("literals", []) or []:
            name, _, value = lit.partition("=")
            cm["data"][name] = value
        behavior = gen.get("behavior", "create")
        existing = [o for o in objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"] == gen["name"]]
        if behavior == "create":
            if existing:
                raise RenderError(f"{rel(kfile)}: ConfigMap `{gen['name']}` already exists")
            objects.append(cm)
        elif behavior in ("merge", "replace") and existing:
            if behavior == "replace":
                existing[0]["data"] = cm["data"]
            else:
                existing[0].setdefault("data", {}).update(cm["data"])
        else:
            raise RenderError(f"{rel(kfile)}: configMapGenerator behavior `{behavior}` "
                              f"for `{gen['name']}` has nothing to act on")

    for p in k.get("patches", []) or []:
        if set(p) - {"path"}:
            raise RenderError(f"{rel(kfile)}: patches entries may only have `path` here")
        ppath = inside(directory, Path(p["path"]), "patch")
        for patch in load_yaml_docs(ppath):
            name = patch.get("metadata", {}).get("name")
            targets = [o for o in objects if o["kind"] == patch["kind"]
                       and o["apiVersion"] == patch["apiVersion"]
                       and o["metadata"].get("name") == name]
            if len(targets) != 1:
                raise RenderError(f"{rel(ppath)}: patch for {patch['kind']}/{name} matches "
                                  f"{len(targets)} objects (expected 1)")
            merged = strategic_merge(targets[0], patch)
            objects[objects.index(targets[0])] = merged

    ns = k.get("namespace")
    if ns:
        for o in objects:
            if o["kind"] not in CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = ns
    return objects


def strategic_merge(base, patch, field: str = ""):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = MERGE_KEYS.get(field)
        if field == "ports":  # containerPort in pods, port in Services
            key = "containerPort" if all("containerPort" in i for i in base + patch) else "port"
        if key and all(isinstance(i, dict) and key in i for i in base + patch):
            out = copy.deepcopy(base)
            for item in patch:
                match = [i for i, b in enumerate(out) if b[key] == item[key]]
                if match:
                    out[match[0]] = strategic_merge(out[match[0]], item, field)
                else:
                    out.append(copy.deepcopy(item))
            return out
        return copy.deepcopy(patch)
    return copy.deepcopy(patch)


# --------------------------------------------------------------------------------------
# Checks.

class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def ok(self, msg: str) -> None:
        print(f"  ok    {msg}")

    def note(self, msg: str) -> None:
        print(f"  note  {msg}")

    def fail(self, msg: str) -> None:
        print(f"  FAIL  {msg}")
        self.failures.append(msg)


def name_of(o: dict) -> str:
    return f"{o['kind']}/{o['metadata'].get('name')}"


def pod_spec(o: dict) -> dict | None:
    if o["kind"] in WORKLOADS:
        return o["spec"]["template"]["spec"]
    return None


def pod_labels(o: dict) -> dict:
    return o["spec"]["template"].get("metadata", {}).get("labels", {})


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def validate_schemas(objects: list[dict], version: str, r: Report) -> None:
    import kubernetes_validate  # noqa: PLC0415 (installed by scripts/check-deploy.sh)

    for o in objects:
        group = o["apiVersion"].split("/")[0] if "/" in o["apiVersion"] else ""
        if group in CRD_GROUPS:
            spec = o.get("spec", {})
            if o["kind"] == "ServiceMonitor" and not (
                    spec.get("selector", {}).get("matchLabels") and spec.get("endpoints")):
                r.fail(f"{name_of(o)}: a ServiceMonitor needs spec.selector.matchLabels and endpoints")
            else:
                r.note(f"{name_of(o)} ({o['apiVersion']}): custom resource, schema not in "
                       "Kubernetes; YAML parsed, selector and endpoints present, schema check skipped")
            continue
        try:
            used = kubernetes_validate.validate(o, version, strict=True)
            r.ok(f"{name_of(o)} valid against Kubernetes {used} schemas (strict)")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in getattr(e, "absolute_path", []))
            r.fail(f"{name_of(o)}: {path or '(top)'}: {getattr(e, 'message', e)}")
        except kubernetes_validate.SchemaNotFoundError:
            r.fail(f"{name_of(o)}: no Kubernetes {version} schema for {o['apiVersion']} {o['kind']}")
        except Exception as e:  # noqa: BLE001 (an unsupported version, a broken schema)
            r.fail(f"{name_of(o)}: cannot validate: {getattr(e, 'message', e)}")


def check_references(objects: list[dict], r: Report) -> None:
    by_kind: dict[str, list[dict]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}

    for svc in by_kind.get("Service", []):
        sel = svc["spec"].get("selector", {})
        pods = [w for w in workloads if selects(sel, pod_labels(w))]
        if not pods:
            r.fail(f"{name_of(svc)}: selector {sel} selects no pod template")
            continue
        ports = {p.get("name") for w in pods for c in pod_spec(w)["containers"]
                 for p in c.get("ports", [])}
        for port in svc["spec"].get("ports", []):
            t = port.get("targetPort")
            if isinstance(t, str) and t not in ports:
                r.fail(f"{name_of(svc)}: targetPort `{t}` is not a port of {[name_of(w) for w in pods]}")
        r.ok(f"{name_of(svc)} selects {', '.join(name_of(w) for w in pods)}")
    for sts in by_kind.get("StatefulSet", []):
        if ("Service", sts["spec"].get("serviceName")) not in names:
            r.fail(f"{name_of(sts)}: serviceName `{sts['spec'].get('serviceName')}` is not a Service")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(selects(sel, pod_labels(w)) for w in workloads):
            r.fail(f"{name_of(pdb)}: selector {sel} selects no pod template")
        else:
            r.ok(f"{name_of(pdb)} selects a pod template")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        t = hpa["spec"]["scaleTargetRef"]
        if (t["kind"], t["name"]) not in names:
            r.fail(f"{name_of(hpa)}: target {t['kind']}/{t['name']} does not exist")
        else:
            r.ok(f"{name_of(hpa)} targets {t['kind']}/{t['name']}")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"].get("matchLabels", {})
        svcs = [s for s in by_kind.get("Service", [])
                if selects(sel, s["metadata"].get("labels", {}))]
        want = {e.get("port") for e in sm["spec"]["endpoints"]}
        have = {p.get("name") for s in svcs for p in s["spec"].get("ports", [])}
        if not svcs or not want <= have:
            r.fail(f"{name_of(sm)}: selects Services {[name_of(s) for s in svcs]} with ports "
                   f"{sorted(have)}, endpoints want {sorted(want)}")
        else:
            r.ok(f"{name_of(sm)} scrapes {', '.join(name_of(s) for s in svcs)} port {sorted(want)}")

    secrets: dict[str, set[str]] = {}
    for w in workloads:
        spec = pod_spec(w)
        for v in spec.get("volumes", []):
            if "configMap" in v and ("ConfigMap", v["configMap"]["name"]) not in names:
                r.fail(f"{name_of(w)}: volume `{v['name']}` names ConfigMap "
                       f"`{v['configMap']['name']}`, which is not rendered")
            pvc = v.get("persistentVolumeClaim")
            if pvc and ("PersistentVolumeClaim", pvc["claimName"]) not in names:
                r.fail(f"{name_of(w)}: volume `{v['name']}` names PVC `{pvc['claimName']}`, not rendered")
        for c in spec.get("initContainers", []) + spec["containers"]:
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            missing = mounts - {v["name"] for v in spec.get("volumes", [])} - {
                t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
            if missing:
                r.fail(f"{name_of(w)}/{c['name']}: mounts undefined volume(s) {sorted(missing)}")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secrets.setdefault(ref["name"], set()).add(ref["key"])
                elif SECRET_LIKE.search(e["name"]) and "value" in e:
                    r.fail(f"{name_of(w)}/{c['name']}: env {e['name']} has a literal value; "
                           "take it from a Secret by reference")
    if by_kind.get("Secret"):
        r.fail("the manifests contain Secret objects: secret values never go in the repository")
    for s, keys in sorted(secrets.items()):
        r.note(f"expects Secret `{s}` (created outside the repository) with keys: {', '.join(sorted(keys))}")


def check_pod_security(objects: list[dict], r: Report) -> None:
    for w in objects:
        spec = pod_spec(w)
        if spec is None:
            continue
        psc = spec.get("securityContext", {})
        problems = []
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                problems.append(f"{c['name']}: runAsNonRoot is not true")
            if (sc.get("runAsUser", psc.get("runAsUser")) == 0):
                problems.append(f"{c['name']}: runs as uid 0")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{c['name']}: allowPrivilegeEscalation is not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{c['name']}: capabilities.drop lacks ALL")
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{c['name']}: no RuntimeDefault seccomp profile")
        if problems:
            r.fail(f"{name_of(w)} breaks the restricted Pod Security Standard: {'; '.join(problems)}")
        else:
            r.ok(f"{name_of(w)}: non-root, no privilege escalation, capabilities dropped, seccomp")


def gateway_metric_names() -> set[str] | None:
    src = ROOT / "crates" / "gateway" / "src" / "metrics.rs"
    if not src.exists():
        return None
    return set(re.findall(r'"([a-z_]+)"', src.read_text()))


def check_config_maps(objects: list[dict], r: Report) -> None:
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        for key, text in cm.get("data", {}).items():
            where = f"{name_of(cm)} key {key}"
            if key.endswith(".toml"):
                try:
                    tomllib.loads(text)
                    r.ok(f"{where}: TOML parses")
                except tomllib.TOMLDecodeError as e:
                    r.fail(f"{where}: {e}")
            elif key.endswith(".json"):
                check_dashboard(where, text, r)


DASHBOARD_TOPICS = {
    "request rate": r"requests? per second|request rate",
    "latency p50/p95": r"p50.*p95|latency",
    "escalations": r"escalation",
    "tokens computed vs reused": r"computed.*reused|reused.*computed",
    "cost per day": r"cost",
}


def check_dashboard(where: str, text: str, r: Report) -> None:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        r.fail(f"{where}: not JSON: {e}")
        return
    panels = d.get("panels", [])
    if not panels:
        r.fail(f"{where}: no panels")
        return
    titles = " | ".join(p.get("title", "") for p in panels).lower()
    for topic, pattern in DASHBOARD_TOPICS.items():
        if not re.search(pattern, titles):
            r.fail(f"{where}: no panel for {topic}")
    exprs = [t.get("expr", "") for p in panels for t in p.get("targets", [])]
    if not exprs or any(not e.strip() for e in exprs):
        r.fail(f"{where}: a panel target has no expression")
    known = gateway_metric_names()
    series = {m for e in exprs for m in re.findall(r"careflow_([a-z_]+)", e)}
    # A histogram's series are its name + _bucket / _sum / _count.
    base_of = {m: re.sub(r"_(bucket|sum|count)$", "", m) for m in series}
    used = set(base_of.values())
    if known is None:
        r.note(f"{where}: crates/gateway/src/metrics.rs not found; metric names not checked")
    else:
        unknown = sorted(m for m in series if m not in known and base_of[m] not in known)
        if unknown:
            r.fail(f"{where}: metrics the gateway does not register: "
                   f"{', '.join('careflow_' + m for m in unknown)}")
    r.ok(f"{where}: Grafana dashboard JSON parses, {len(panels)} panels, "
         f"{len(exprs)} queries over {len(used)} careflow metrics")


def kubectl_cross_check(directory: Path, objects: list[dict], mode: str, r: Report) -> None:
    kubectl = shutil.which("kubectl") if mode != "never" else None
    if not kubectl:
        r.note("kubectl not found: rendering not cross-checked against kustomize")
        return
    try:
        out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                             text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        r.note(f"kubectl kustomize could not run ({e}); not cross-checked")
        return
    if out.returncode != 0:
        r.fail(f"kubectl kustomize {rel(directory)} failed: {out.stderr.strip()}")
        return
    theirs = {key_of(o): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {key_of(o): o for o in objects}
    if theirs.keys() != ours.keys():
        r.fail(f"kubectl kustomize renders other objects: only theirs "
               f"{sorted(set(theirs) - set(ours))}, only ours {sorted(set(ours) - set(theirs))}")
        return
    differ = [k for k in ours if ours[k] != theirs[k]]
    if differ:
        r.fail(f"kubectl kustomize renders these differently: {differ}")
    else:
        r.ok(f"kubectl kustomize renders the same {len(ours)} objects")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k8s-version", default="1.30")
    ap.add_argument("--out", default=str(ROOT / "target" / "deploy-rendered"))
    ap.add_argument("--kubectl", choices=["auto", "never"], default="auto")
    a = ap.parse_args()

    targets = [("base", K8S / "base")] + [
        (p.name, p) for p in sorted((K8S / "overlays").iterdir()) if p.is_dir()]
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    r = Report()
    for path in sorted(K8S.rglob("*.yaml")):
        try:
            load_yaml_docs(path) if path.name != "kustomization.yaml" else yaml.safe_load(path.read_text())
        except (RenderError, yaml.YAMLError) as e:
            r.fail(str(e))
    for name, directory in targets:
        print(f"\n== {rel(directory)} (Kubernetes {a.k8s_version})")
        try:
            objects = render(directory)
        except RenderError as e:
            r.fail(str(e))
            continue
        rendered = out_dir / f"{name}.yaml"
        rendered.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        r.ok(f"rendered {len(objects)} objects to {rel(rendered)}")
        dupes = {key_of(o) for o in objects if [key_of(x) for x in objects].count(key_of(o)) > 1}
        if dupes:
            r.fail(f"objects defined twice: {sorted(dupes)}")
        validate_schemas(objects, a.k8s_version, r)
        check_references(objects, r)
        check_pod_security(objects, r)
        check_config_maps(objects, r)
        kubectl_cross_check(directory, objects, a.kubectl, r)
    print()
    if r.failures:
        print(f"deploy manifests: {len(r.failures)} failure(s)")
        return 1
    print(f"deploy manifests: {len(targets)} renderings checked, no failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
