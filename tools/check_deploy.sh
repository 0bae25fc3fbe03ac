#!/usr/bin/env bash
# Checks the deployment files under deploy/:
#   - Prometheus alerting rules parse (promtool check rules) and behave (promtool test rules);
#     every alert is unit-tested both firing and not firing, aggregates by namespace, job and pod,
#     and has a runbook_url whose anchor is a heading of README.md's Runbook section;
#   - the Grafana dashboard is valid JSON, every panel query parses as PromQL (Grafana's
#     $__rate_interval, $__range and the template variables are substituted first) and is scoped
#     by the namespace, job and pod variables;
#   - the Kubernetes manifests and the Dockerfile's inputs are present; YAML syntax is checked when
#     PyYAML is installed, `kubectl kustomize` is run when kubectl is installed (both skipped if not);
#   - with PyYAML: no committed Secret carries a literal value (the token comes from the gitignored
#     admin-token through kustomize's secretGenerator), every route of the ConfigMap starts at
#     new: 0, probes tolerate one slow reply, the PodDisruptionBudget and NetworkPolicy select the
#     Deployment's pods, the PodMonitor has kube-prometheus-stack's `release` label; the rendered
#     kustomization points the Deployment at the generated Secret;
#   - the Dockerfile builds without tests, runs as non-root with /etc/cutover as a volume, and its
#     context filter keeps admin-token out (tools/check_image.sh builds and runs it for real);
#   - the ConfigMap's cutover.yaml passes `cutover --check` when a cutover binary is given
#     (CUTOVER_BIN=path, or build/proxy/cutover exists).
# Exit status 0 when every check that could run passed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deploy="$root/deploy"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
step() { printf '== %s\n' "$*"; }

step "promtool check rules"
promtool check rules "$deploy/prometheus/alerts.yml" || fail=1
step "promtool test rules"
(cd "$deploy/prometheus" && promtool test rules alerts_test.yml) || fail=1
step "alert coverage: tests firing and not firing, by (namespace, job, pod), runbook anchors"
if python3 -c 'import yaml' 2>/dev/null; then
  python3 - "$deploy/prometheus" "$root/README.md" <<'PY' || fail=1
import os, re, sys, yaml
prom, readme = sys.argv[1], sys.argv[2]
rules = [r for g in yaml.safe_load(open(os.path.join(prom, "alerts.yml")))["groups"]
         for r in g["rules"] if "alert" in r]
tests = yaml.safe_load(open(os.path.join(prom, "alerts_test.yml")))["tests"]
fires, silent = set(), set()
for t in tests:
    for a in t.get("alert_rule_test", []):
        (fires if a.get("exp_alerts") else silent).add(a["alertname"])
text = open(readme).read()
runbook = text.split("\n## Runbook", 1)[1].split("\n## ", 1)[0] if "\n## Runbook" in text else ""
anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^###\s+(.+)$", runbook, re.M)}
bad = []
for r in rules:
    name, expr = r["alert"], r["expr"]
    if name not in fires: bad.append(f"{name}: no test where it fires")
    if name not in silent: bad.append(f"{name}: no test where it stays silent")
    for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
        labels = {l.strip() for l in grouping.split(",")}
        if not {"namespace", "job"} <= labels or ("pod" not in labels and
                                                     not re.search(r"\bon\s*\(", expr)):
            bad.append(f"{name}: groups by ({grouping}) without namespace, job, pod")
    if not re.search(r"\bby\s*\([^)]*\bpod\b", expr):
        bad.append(f"{name}: no by (..., pod, ...)")
    url = r.get("annotations", {}).get("runbook_url", "")
    anchor = url.rsplit("#", 1)[-1] if "#" in url else ""
    if anchor not in anchors: bad.append(f"{name}: runbook_url anchor #{anchor} is not a README Runbook heading")
for b in bad: print(b)
print(f"{len(rules)} alerts checked")
sys.exit(1 if bad else 0)
PY
else
  echo "PyYAML not installed: alert coverage check skipped"
fi

step "dashboard JSON"
python3 -m json.tool "$deploy/grafana/cutover-dashboard.json" >/dev/null || fail=1
python3 - "$deploy/grafana/cutover-dashboard.json" "$tmp/dashboard_rules.yml" <<'PY' || fail=1
import json, sys
dash = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
exprs += [a["expr"] for a in dash.get("annotations", {}).get("list", []) if "expr" in a]
if not exprs:
    sys.exit("dashboard has no queries")
# Every query that reads a series is scoped by the namespace, job and pod template variables, so
# two deployments (or one rolled-back pod) never blend into one line.
unscoped = [e for e in exprs if "cutover_" in e and not all(
    v in e for v in ('namespace=~"$namespace"', 'job=~"$job"', 'pod=~"$pod"'))]
if unscoped:
    sys.exit("queries without namespace/job/pod: %s" % unscoped)
names = {v["name"] for v in dash.get("templating", {}).get("list", [])}
if not {"namespace", "job", "pod"} <= names:
    sys.exit("dashboard lacks namespace/job/pod template variables")
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$__range", "1h")
        for v in ("$route", "$namespace", "$job", "$pod"):
            e = e.replace(v, ".*")
        out.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
print(f"{len(exprs)} queries extracted")
PY
promtool check rules "$tmp/dashboard_rules.yml" >/dev/null || { echo "dashboard PromQL does not parse"; fail=1; }

step "Kubernetes manifests and Dockerfile"
for f in Dockerfile Dockerfile.dockerignore kubernetes/configmap.yaml kubernetes/deployment.yaml \
         kubernetes/service.yaml kubernetes/podmonitor.yaml kubernetes/kustomization.yaml \
         kubernetes/poddisruptionbudget.yaml kubernetes/networkpolicy.yaml; do
  [[ -s "$deploy/$f" ]] || { echo "missing $deploy/$f"; fail=1; }
done
if python3 -c 'import yaml' 2>/dev/null; then
  python3 - "$deploy" "$tmp/cutover.yaml" <<'PY' || fail=1
import glob, os, sys, yaml
deploy, out = sys.argv[1], sys.argv[2]
for path in sorted(glob.glob(os.path.join(deploy, "kubernetes", "*.yaml"))):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    for d in docs:
        if "kind" not in d:
            sys.exit(f"{path}: a document without kind")
        if d["kind"] == "ConfigMap" and "cutover.yaml" in d.get("data", {}):
            yaml.safe_load(d["data"]["cutover.yaml"])
            open(out, "w").write(d["data"]["cutover.yaml"])
    print(f"{os.path.basename(path)}: {len(docs)} document(s) parse")
PY
  step "manifest rules"
  python3 - "$deploy/kubernetes" <<'PY' || fail=1
import glob, os, sys, yaml
k8s = sys.argv[1]
docs = {}
for path in sorted(glob.glob(os.path.join(k8s, "*.yaml"))):
    for d in yaml.safe_load_all(open(path)):
        if d:
            docs.setdefault(d["kind"], []).append((os.path.basename(path), d))
errors = []
for name, d in docs.get("Secret", []):
    if d.get("data") or d.get("stringData"):
        errors.append(f"{name}: Secret {d['metadata']['name']} has a literal value; "
                      "`kubectl apply -k` would overwrite the real one (use admin-token)")
kust = yaml.safe_load(open(os.path.join(k8s, "kustomization.yaml")))
gens = kust.get("secretGenerator", [])
if not any("admin-token" in g.get("files", []) for g in gens):
    errors.append("kustomization.yaml: no secretGenerator from the file admin-token")
(cm_name, cm), = [(n, d) for n, d in docs["ConfigMap"] if "cutover.yaml" in d.get("data", {})]
routes = yaml.safe_load(cm["data"]["cutover.yaml"]).get("routes") or []
if not routes:
    errors.append(f"{cm_name}: cutover.yaml has no routes")
for r in routes:
    if (r.get("split") or {}).get("new") != 0:
        errors.append(f"{cm_name}: route {r.get('name')} starts at split {r.get('split')}, not new: 0")
(dep_name, dep), = docs["Deployment"]
pod_labels = dep["spec"]["template"]["metadata"]["labels"]
for c in dep["spec"]["template"]["spec"]["containers"]:
    for kind in ("readinessProbe", "livenessProbe"):
        p = c.get(kind)
        if p and (p.get("failureThreshold", 3) < 2 or p.get("timeoutSeconds", 1) < 2):
            errors.append(f"{dep_name}: {c['name']}.{kind} fails on one slow reply "
                          "(needs failureThreshold >= 2 and timeoutSeconds >= 2)")
    if c["name"] == "cutover" and not ("readinessProbe" in c and "livenessProbe" in c):
        errors.append(f"{dep_name}: cutover needs both a readinessProbe and a livenessProbe")
for kind, sel in (("PodDisruptionBudget", lambda d: d["spec"]["selector"]["matchLabels"]),
                  ("NetworkPolicy", lambda d: d["spec"]["podSelector"]["matchLabels"]),
                  ("PodMonitor", lambda d: d["spec"]["selector"]["matchLabels"])):
    if not docs.get(kind):
        errors.append(f"no {kind}")
    for name, d in docs.get(kind, []):
        if any(pod_labels.get(k) != v for k, v in sel(d).items()):
            errors.append(f"{name}: {kind} selector {sel(d)} misses the pods {pod_labels}")
for name, d in docs.get("PodMonitor", []):
    if "release" not in d["metadata"].get("labels", {}):
        errors.append(f"{name}: no `release` label (kube-prometheus-stack selects by it)")
for e in errors:
    print(e)
if errors:
    sys.exit(1)
print(f"{len(routes)} route(s) at new: 0; no literal Secret; probes, PDB, NetworkPolicy, PodMonitor ok")
PY
else
  echo "PyYAML not installed: YAML syntax check skipped"
fi
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$root" check-ignore -q --no-index deploy/kubernetes/admin-token ||
    { echo "deploy/kubernetes/admin-token is not gitignored"; fail=1; }
  [[ -z "$(git -C "$root" ls-files deploy/kubernetes/admin-token)" ]] ||
    { echo "deploy/kubernetes/admin-token is committed"; fail=1; }
fi
if command -v kubectl >/dev/null; then
  # On a copy with a throwaway token: the real admin-token is not in a checkout.
  cp -r "$deploy/kubernetes" "$tmp/kustomize"
  printf '%s' check-deploy-token >"$tmp/kustomize/admin-token"
  if kubectl kustomize "$tmp/kustomize" >"$tmp/rendered.yaml"; then
    echo "kubectl kustomize: ok"
    if python3 -c 'import yaml' 2>/dev/null; then
      python3 - "$tmp/rendered.yaml" <<'PY' || fail=1
import base64, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
dep = next(d for d in docs if d["kind"] == "Deployment")
refs = [e["valueFrom"]["secretKeyRef"] for c in dep["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
for ref in refs:
    s = secrets.get(ref["name"])
    if s is None or base64.b64decode(s.get("data", {}).get(ref["key"], "")) != b"check-deploy-token":
        sys.exit(f"rendered Deployment refers to Secret {ref['name']} key {ref['key']}, "
                 "which is not the one generated from admin-token")
if not refs:
    sys.exit("rendered Deployment reads no Secret")
print(f"rendered: the Deployment reads the generated Secret {refs[0]['name']}")
PY
    fi
  else
    fail=1
  fi
else
  echo "kubectl not installed: kustomize check skipped"
fi
grep -q 'ENTRYPOINT \["/usr/local/bin/cutover", "--config", "/etc/cutover/cutover.yaml"\]' \
  "$deploy/Dockerfile" || { echo "Dockerfile entrypoint changed"; fail=1; }
grep -q -- '-DCUTOVER_BUILD_TESTS=OFF' "$deploy/Dockerfile" ||
  { echo "Dockerfile: the build must use -DCUTOVER_BUILD_TESTS=OFF (no python3 in the image)"; fail=1; }
grep -qE '^USER +10001' "$deploy/Dockerfile" || { echo "Dockerfile: not USER 10001"; fail=1; }
grep -qE '^VOLUME .*/etc/cutover' "$deploy/Dockerfile" || { echo "Dockerfile: no VOLUME /etc/cutover"; fail=1; }
grep -qx 'deploy/kubernetes/admin-token' "$deploy/Dockerfile.dockerignore" ||
  { echo "Dockerfile.dockerignore: admin-token would enter the build context"; fail=1; }

bin="${CUTOVER_BIN:-$root/build/proxy/cutover}"
if [[ -x "$bin" && -s "$tmp/cutover.yaml" ]]; then
  step "cutover --check on data.cutover.yaml of deploy/kubernetes/configmap.yaml (copied to $tmp)"
  # The Deployment sets CUTOVER_ADMIN_TOKEN from its Secret, and the ConfigMap's admin listener is
  # not loopback, so the check needs a token as the pod has one (a missing one is a config error).
  CUTOVER_ADMIN_TOKEN="${CUTOVER_ADMIN_TOKEN:-check-deploy-placeholder}" \
    "$bin" --check "$tmp/cutover.yaml" || fail=1
else
  echo "no cutover binary (CUTOVER_BIN) or PyYAML: ConfigMap config check skipped"
fi

if [[ $fail -ne 0 ]]; then echo "check_deploy: FAILED"; exit 1; fi
echo "check_deploy: ok"
