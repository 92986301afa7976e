"""Checks the deployment files under deploy/ offline: each parses (YAML, TOML), the
Kubernetes objects have what the API requires of them, and every file agrees with the
image: port 8080, the probe on /healthz, the volume at /state, one replica."""

import pathlib
import sys
import tomllib

import yaml

DEPLOY = pathlib.Path(__file__).parent
problems = []


def need(condition, what):
    if not condition:
        problems.append(what)


def check_kubernetes(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    kinds = {}
    for document in documents:
        need(document.get("apiVersion"), f"{path.name}: an object without apiVersion")
        need(document.get("kind"), f"{path.name}: an object without kind")
        need(document.get("metadata", {}).get("name"), f"{path.name}: an object without a name")
        kinds[document.get("kind")] = document
    for kind in ["Secret", "ConfigMap", "Service", "StatefulSet"]:
        need(kind in kinds, f"{path.name}: no {kind}")
    spec = kinds.get("StatefulSet", {}).get("spec", {})
    need(spec.get("replicas") == 1, f"{path.name}: the StatefulSet is not one replica")
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    need(spec.get("selector", {}).get("matchLabels", {}).items() <= labels.items(),
         f"{path.name}: the selector does not match the pod's labels")
    containers = spec.get("template", {}).get("spec", {}).get("containers", [])
    need(len(containers) == 1, f"{path.name}: not one container")
    container = containers[0] if containers else {}
    ports = [p.get("containerPort") for p in container.get("ports", [])]
    need(ports == [8080], f"{path.name}: the container port is not 8080")
    for probe in ["readinessProbe", "livenessProbe"]:
        path_of = container.get(probe, {}).get("httpGet", {}).get("path")
        need(path_of == "/healthz", f"{path.name}: {probe} is not on /healthz")
    mounts = {m.get("mountPath") for m in container.get("volumeMounts", [])}
    need("/state" in mounts, f"{path.name}: nothing mounted at /state")
    claims = [c.get("metadata", {}).get("name") for c in spec.get("volumeClaimTemplates", [])]
    need("state" in claims, f"{path.name}: no volume claim for the state")


def check_fly(path):
    fly = tomllib.loads(path.read_text())
    need(fly.get("mounts", {}).get("destination") == "/state", f"{path.name}: no volume at /state")
    service = fly.get("http_service", {})
    need(service.get("internal_port") == 8080, f"{path.name}: the port is not 8080")
    checks = service.get("checks", [])
    need(any(c.get("path") == "/healthz" for c in checks), f"{path.name}: no check on /healthz")


check_kubernetes(DEPLOY / "kubernetes.yaml")
check_fly(DEPLOY / "fly.toml")
for problem in problems:
    print(problem, file=sys.stderr)
if problems:
    sys.exit(1)
print("deploy/: kubernetes.yaml and fly.toml parse and agree with the image")
