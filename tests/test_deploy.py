"""deploy/: the Dockerfile lints clean and runs commands that exist; every kustomize overlay
renders, validates against the Kubernetes and CRD schemas, carries valid service settings, and
passes the security scan (findings fixed, or skipped with a reason in the manifest)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from lineguard.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OVERLAYS = ["cpu", "gpu"]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        path = Path(shutil.which(name) or name)
    assert path.exists(), f"{name} not found: run scripts/setup.sh"
    return str(path)


def render(overlay: str) -> list[dict]:
    result = subprocess.run([tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def test_dockerfile_lints_clean_and_runs_existing_commands():
    dockerfile = DEPLOY / "docker" / "Dockerfile"
    result = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert 'ENTRYPOINT ["lineguard"]' in text
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    assert json.loads(cmd[4:])[0] in subcommands()
    assert "USER 10001" in text and "HEALTHCHECK" in text
    for stage in ("AS cpu", "AS gpu"):
        assert stage in text
    # the image installs the package whose entry point it runs
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'lineguard = "lineguard.cli:main"' in pyproject


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay, tmp_path):
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    crd_models = {("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
                  ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
                  ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor}
    strimzi = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    docs = render(overlay)
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "StatefulSet", "PodDisruptionBudget", "ScaledObject", "KafkaTopic",
            "ServiceMonitor", "ConfigMap"} <= kinds
    assert "Secret" not in kinds  # secrets are referenced, never contained
    version = kubernetes_validate.latest_version()
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in crd_models:
            model = crd_models[key].model_validate(doc)
            dumped = model.model_dump(by_alias=True, exclude_none=True, mode="json")
            assert not _unknown_fields(doc, dumped), (doc["kind"], _unknown_fields(doc, dumped))
        elif doc["kind"] not in strimzi:
            kubernetes_validate.validate(doc, version, strict=True)
    custom = [doc for doc in docs if doc["kind"] in strimzi]
    assert len(custom) == 8
    ok, report = validate_strimzi(custom, tmp_path)
    assert ok, report


def validate_strimzi(docs: list[dict], tmp_path: Path) -> tuple[bool, str]:
    """Strimzi resources against the schemas generated from Strimzi's CRDs (npm package in
    deploy/checks, installed by scripts/setup.sh)."""
    checks = DEPLOY / "checks"
    assert (checks / "node_modules").is_dir(), "run scripts/setup.sh (npm ci in deploy/checks)"
    path = tmp_path / f"strimzi-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(docs))
    done = subprocess.run([tool("node"), str(checks / "validate-strimzi.mjs"), str(path)],
                          capture_output=True, text=True, timeout=60, cwd=checks)
    return done.returncode == 0, done.stdout + done.stderr


def test_strimzi_check_catches_a_bad_resource(tmp_path):
    topic = next(d for d in render("cpu") if d["kind"] == "KafkaTopic")
    topic["spec"]["partitions"] = "twelve"
    ok, report = validate_strimzi([topic], tmp_path)
    assert not ok and "partitions must be integer" in report


def _unknown_fields(given, known, path="") -> list[str]:
    """Keys in the manifest that the CRD model dropped (unknown to its schema)."""
    if isinstance(given, dict) and isinstance(known, dict):
        missing = []
        for key, value in given.items():
            if key not in known:
                missing.append(f"{path}.{key}")
            else:
                missing += _unknown_fields(value, known[key], f"{path}.{key}")
        return missing
    if isinstance(given, list) and isinstance(known, list):
        return [m for g, k in zip(given, known, strict=False) for m in _unknown_fields(g, k, path)]
    return []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_wiring(overlay, tmp_path):
    from alerting.settings import AlertingSettings
    from detector.settings import DetectorSettings
    from producer.settings import ProducerSettings

    docs = render(overlay)
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    # the settings files in the ConfigMap load with the services' own Settings classes
    config = next(d for name, d in by_kind["ConfigMap"].items() if name.startswith("lineguard-config"))
    classes = {"detector.yaml": DetectorSettings, "alerting.yaml": AlertingSettings,
               "producer.yaml": ProducerSettings}
    assert set(config["data"]) == set(classes)
    for name, settings_class in classes.items():
        (tmp_path / name).write_text(config["data"][name])
        settings_class.load(tmp_path / name)
    # KEDA never scales past the partitions of frames
    scaled = by_kind["ScaledObject"]["detector"]
    frames = by_kind["KafkaTopic"]["frames"]
    assert scaled["spec"]["maxReplicaCount"] <= frames["spec"]["partitions"]
    # every container runs an existing subcommand, non-root, with probes on the HTTP services
    for name, deployment in by_kind["Deployment"].items():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["args"][0] in subcommands(), name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        if container["args"][0] in ("detector", "alerting"):
            assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert pod["terminationGracePeriodSeconds"] >= 60
    detector = by_kind["Deployment"]["detector"]["spec"]["template"]["spec"]
    if overlay == "gpu":
        assert detector["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert detector["tolerations"] and detector["nodeSelector"]
        assert detector["containers"][0]["image"].endswith("-gpu")
    else:
        assert "nvidia.com/gpu" not in detector["containers"][0]["resources"]["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_security_scan(overlay, tmp_path):
    checkov = ROOT / ".venv-tools" / "bin" / "checkov"
    assert checkov.exists(), "checkov not found: run scripts/setup.sh"
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(render(overlay)))
    result = subprocess.run([str(checkov), "-f", str(rendered), "--framework", "kubernetes",
                             "--skip-download", "--output", "json"],
                            capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and not failed, failed
    assert summary["passed"] > 100
    for skipped in report["results"]["skipped_checks"]:  # every skip says why
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped["check_id"]
