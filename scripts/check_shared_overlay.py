"""Static checks of the shared overlay that kubernetes-validate cannot make (run by scripts/static-checks.sh).

    check_shared_overlay.py BASE.yaml SHARED.yaml     (both rendered by `kubectl kustomize`)

1. The watcher Deployment's container is the base's sidecar: same image, probes, resources, security context
   and environment, but for what shared mode changes (MODELGEN_SHARED; no restartPolicy, which only a native
   sidecar has). The two are written out in two files for readability; this keeps them from drifting apart.
2. The KEDA ScaledObject against KEDA's own schema: kubernetes-validate knows only Kubernetes' API and passes
   an unknown kind with a warning. The schema comes from cloudcoil-models-keda (PyPI), pydantic models
   generated from KEDA's CRDs; unknown fields are refused (a misspelt field would otherwise be ignored by
   KEDA too), and the ScaledObject must scale the watcher Deployment on modelgen_pending_requests.

Runs on the static checks' own venv (.tools: PyYAML, cloudcoil-models-keda), never the project's.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject

WATCHER = "cyclesafe-modelgen"
SHARED_ONLY_ENV = {"MODELGEN_SHARED": "true"}


def documents(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        sys.exit(f"expected one {kind} {name}, found {len(found)}")
    return found[0]


def comparable(container: dict[str, Any], drop_env: dict[str, str]) -> dict[str, Any]:
    """The container without what may differ: shared mode's variables and the native sidecar's restartPolicy."""
    out = {k: v for k, v in container.items() if k != "restartPolicy"}
    env = container.get("env", [])
    for name, value in drop_env.items():
        if {"name": name, "value": value} not in env:
            sys.exit(f"the watcher container lacks {name}={value}")
    out["env"] = [e for e in env if e["name"] not in drop_env]
    return out


def check_watcher_is_the_sidecar(base: list[dict[str, Any]], shared: list[dict[str, Any]]) -> None:
    sidecar = one(base, "Deployment", "cyclesafe")["spec"]["template"]["spec"]["initContainers"]
    watcher = one(shared, "Deployment", WATCHER)["spec"]["template"]["spec"]["containers"]
    if len(sidecar) != 1 or len(watcher) != 1:
        sys.exit(f"expected one watcher container in each, found {len(sidecar)} and {len(watcher)}")
    a, b = comparable(sidecar[0], {}), comparable(watcher[0], SHARED_ONLY_ENV)
    if a != b:
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        sys.exit(f"the shared overlay's watcher differs from the base's sidecar in {differ}:\n"
                 f"base:   { {k: a.get(k) for k in differ} }\nshared: { {k: b.get(k) for k in differ} }")
    print(f"ok: {WATCHER}'s container is the base's sidecar plus {SHARED_ONLY_ENV}")


def check_scaled_object(shared: list[dict[str, Any]]) -> None:
    doc = one(shared, "ScaledObject", WATCHER)
    try:
        scaled = ScaledObject.model_validate(doc, strict=True, extra="forbid")
    except ValueError as err:
        sys.exit(f"the ScaledObject does not match KEDA's schema: {err}")
    spec = doc["spec"]
    target = spec["scaleTargetRef"]
    if target["name"] != WATCHER or target.get("kind", "Deployment") != "Deployment":
        sys.exit(f"the ScaledObject scales {target}, not the Deployment {WATCHER}")
    one(shared, "Deployment", WATCHER)
    triggers = spec["triggers"]
    if not any(t["type"] == "prometheus" and "modelgen_pending_requests" in t["metadata"]["query"] for t in triggers):
        sys.exit("no prometheus trigger on modelgen_pending_requests")
    if spec.get("minReplicaCount", 0) < 1:
        sys.exit("minReplicaCount must be at least 1 (scaledobject.yaml says why)")
    print(f"ok: ScaledObject {scaled.metadata.name if scaled.metadata else WATCHER} matches KEDA's schema")


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(__doc__)
    base, shared = documents(argv[0]), documents(argv[1])
    check_watcher_is_the_sidecar(base, shared)
    check_scaled_object(shared)


if __name__ == "__main__":
    main(sys.argv[1:])
