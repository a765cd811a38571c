"""Checks of the manifests beyond their schemas (run by
./scripts/validate-manifests): every kustomization names files that exist
and maps the `stoker` image; the sidecar example meets the Restricted pod
security level; the DaemonSet meets it except for its hostPath socket
directory; every pod that runs stoker has a memory limit, gRPC probes and the
right health service names."""

import pathlib
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
errors = []


def fail(where, what):
    errors.append(f"{where}: {what}")


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def pod_spec(doc):
    spec = doc.get("spec", {})
    return spec.get("template", {}).get("spec") if "template" in spec else None


def restricted(where, pod, allow_host_path=False):
    """The Restricted level's rules (Kubernetes pod security standards)."""
    ctx = pod.get("securityContext", {})
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        fail(where, "host namespaces")
    if ctx.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        fail(where, "seccompProfile must be RuntimeDefault or Localhost")
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        allowed = {"configMap", "emptyDir", "secret", "projected", "downwardAPI", "persistentVolumeClaim",
                   "ephemeral", "csi"} | ({"hostPath"} if allow_host_path else set())
        if not kinds <= allowed:
            fail(where, f"volume {v['name']}: {sorted(kinds - allowed)} is not allowed")
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        sc = c.get("securityContext", {})
        name = f"{where} container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(name, "allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            fail(name, "privileged")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            fail(name, "capabilities: drop [ALL], add nothing")
        if not (sc.get("runAsNonRoot") or ctx.get("runAsNonRoot")):
            fail(name, "runAsNonRoot")
        if sc.get("runAsUser", ctx.get("runAsUser")) == 0:
            fail(name, "runs as root")
        if c.get("ports") and any(p.get("hostPort") for p in c["ports"]):
            fail(name, "hostPort")


def stoker_container(where, pod):
    found = [c for c in pod.get("initContainers", []) + pod.get("containers", []) if c.get("image") == "stoker"]
    if len(found) != 1:
        return fail(where, "exactly one container with image `stoker` (mapped by the kustomization)")
    c = found[0]
    if c.get("args", [None])[0] != "serve":
        fail(where, "stoker runs `serve`")
    if "memory" not in c.get("resources", {}).get("limits", {}):
        fail(where, "stoker needs a memory limit (ring pages count against it)")
    if not c.get("securityContext", {}).get("readOnlyRootFilesystem"):
        fail(where, "stoker's root filesystem is read-only")
    probes = {k: c.get(k, {}).get("grpc") for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for k, g in probes.items():
        if not g or g.get("port") != 7070:
            fail(where, f"{k}: gRPC on port 7070")
    if probes["livenessProbe"] and probes["livenessProbe"].get("service") != "liveness":
        fail(where, "livenessProbe asks for service `liveness` (\"\" is readiness)")
    if probes["readinessProbe"] and probes["readinessProbe"].get("service", "") != "":
        fail(where, "readinessProbe asks for the default service")
    return c


for kustomization in sorted(HERE.glob("*/kustomization.yaml")):
    k = docs(kustomization)[0]
    for r in k.get("resources", []):
        if not (kustomization.parent / r).exists():
            fail(kustomization, f"resource {r} does not exist")
    pods = [d for r in k.get("resources", []) if r.endswith(".yaml")
            for d in docs(kustomization.parent / r) if pod_spec(d)]
    if pods and not any(i.get("name") == "stoker" for i in k.get("images", [])):
        fail(kustomization, "maps no `stoker` image")

for path in sorted(HERE.glob("*/*.yaml")):
    for d in docs(path):
        pod = pod_spec(d)
        if not pod:
            continue
        where = f"{path.relative_to(HERE)} {d['kind']}/{d['metadata']['name']}"
        c = stoker_container(where, pod)
        if d["kind"] == "Job":
            if not c or c.get("restartPolicy") != "Always" or c not in pod.get("initContainers", []):
                fail(where, "stoker is a native sidecar: an init container with restartPolicy Always")
            restricted(where, pod)
        elif d["kind"] == "DaemonSet":
            restricted(where, pod, allow_host_path=True)

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print("manifests: kustomizations, pod security and stoker containers check out")
