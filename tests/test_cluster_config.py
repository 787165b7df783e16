"""Check cluster.yaml (AWS) and cluster-local.yaml (on-prem) with Ray's own cluster-launcher code.

`ray up` loads the YAML, merges the provider defaults (`prepare_config`) and validates the result against
Ray's JSON schema plus a few cross-field rules (`validate_config`). These tests run exactly those steps,
skipping only the AWS-specific ones that call the cloud API, and then check the parts of the files this
project relies on: the MLflow server on the head, the kdsweep install, the GPU workers. No network.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = {"aws": ROOT / "cluster.yaml", "local": ROOT / "cluster-local.yaml"}
DB_URI = re.compile(r"^(sqlite|postgresql|mysql|mssql)(\+\w+)?://")
# Instance types with exactly one GPU, for worker types that leave `resources` to AWS auto-detection.
ONE_GPU_INSTANCE_TYPES = {"g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge", "g5.2xlarge", "g6.xlarge", "g6.2xlarge"}


def load(name: str) -> dict:
    """Parse the file the way `ray up` does (yaml.safe_load)."""
    return yaml.safe_load(CONFIG_FILES[name].read_text())


def launcher_validate(raw: dict) -> dict:
    """Ray's launcher checks: merge the provider defaults, then schema + cross-field validation."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


@pytest.fixture(params=sorted(CONFIG_FILES))
def name(request) -> str:
    return request.param


# --------------------------------------------------------------------------- Ray's validator


def test_config_passes_ray_launcher_validation(name):
    config = launcher_validate(load(name))
    assert config["provider"]["type"] == {"aws": "aws", "local": "local"}[name]
    assert config["head_node_type"] in config["available_node_types"]


def test_local_config_bootstraps_like_ray_up():
    """For the local provider the whole `ray up` bootstrap is offline, so run all of it."""
    from ray.autoscaler._private.commands import _bootstrap_config

    config = _bootstrap_config(load("local"), no_config_cache=True)
    raw = load("local")
    (node_type,) = config["available_node_types"].values()
    assert node_type["max_workers"] == min(raw["max_workers"], len(raw["provider"]["worker_ips"]))


def _set(path: str, value):
    def mutate(cfg):
        *parents, last = path.split(".")
        for key in parents:
            cfg = cfg[key]
        cfg[last] = value

    return mutate


def _drop(path: str):
    def mutate(cfg):
        *parents, last = path.split(".")
        for key in parents:
            cfg = cfg[key]
        del cfg[last]

    return mutate


SCHEMA_ERROR = jsonschema.ValidationError
BROKEN_COPIES = [
    # (config, description, mutation, expected error)
    ("aws", "unknown top-level key", _set("not_a_ray_option", 1), SCHEMA_ERROR),
    ("local", "unknown top-level key", _set("not_a_ray_option", 1), SCHEMA_ERROR),
    ("aws", "max_workers not an integer", _set("max_workers", "four"), SCHEMA_ERROR),
    ("aws", "idle timeout not a number", _set("idle_timeout_minutes", "ten"), SCHEMA_ERROR),
    ("local", "upscaling_speed not a number", _set("upscaling_speed", "fast"), SCHEMA_ERROR),
    ("aws", "start commands not a list", _set("head_start_ray_commands", "ray start --head"), SCHEMA_ERROR),
    ("local", "start commands not a list", _set("worker_start_ray_commands", "ray start"), SCHEMA_ERROR),
    (
        "aws",
        "GPU count not an integer",
        _set("available_node_types.gpu_worker.resources", {"GPU": "one"}),
        SCHEMA_ERROR,
    ),
    ("aws", "unknown node-type key", _set("available_node_types.gpu_worker.gpus", 1), SCHEMA_ERROR),
    ("aws", "node type without resources", _drop("available_node_types.gpu_worker.resources"), SCHEMA_ERROR),
    ("aws", "cluster_name not a string", _set("cluster_name", 123), SCHEMA_ERROR),
    ("aws", "ssh_user not a string", _set("auth.ssh_user", ["ubuntu"]), SCHEMA_ERROR),
    ("local", "worker_ips not a list", _set("provider.worker_ips", "10.0.0.2,10.0.0.3"), SCHEMA_ERROR),
    ("local", "head_ip not a string", _set("provider.head_ip", 10), SCHEMA_ERROR),
    ("aws", "head_node_type not a node type", _set("head_node_type", "no_such_type"), ValueError),
    (
        "aws",
        "min_workers above global max_workers",
        _set("available_node_types.gpu_worker.min_workers", 99),
        ValueError,
    ),
]


@pytest.mark.parametrize(
    ("name", "mutation", "error"),
    [pytest.param(n, m, e, id=f"{n}: {d}") for n, d, m, e in BROKEN_COPIES],
)
def test_broken_copy_is_rejected(name, mutation, error):
    """Proves the validator is really exercised: each small breakage of a valid file must fail."""
    raw = load(name)
    launcher_validate(raw)  # the intact file passes ...
    mutation(raw)
    with pytest.raises(error):  # ... the mutated copy does not
        launcher_validate(raw)


# --------------------------------------------------------------------------- MLflow on the head


def mlflow_server_command(config: dict) -> str:
    found = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert len(found) == 1, "head_start_ray_commands must start exactly one `mlflow server`"
    return found[0]


def mlflow_flags(command: str) -> dict[str, str | None]:
    """`--flag value` / `--flag=value` / bare `--flag` pairs of the `mlflow server` call (shell-unquoted)."""
    tokens = shlex.split(command)
    start = next(i for i in range(len(tokens) - 1) if tokens[i : i + 2] == ["mlflow", "server"]) + 2
    args: list[str] = []
    for tok in tokens[start:]:
        if tok in {"&", "&&", ";", "|", ">", "2>&1", "<"} or tok.startswith((">", "<")):
            break
        args.append(tok)
    flags: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        assert tok.startswith("--"), f"unexpected mlflow server argument {tok!r}"
        if "=" in tok:
            key, value = tok.split("=", 1)
            flags[key] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            flags[tok] = args[i + 1]
            i += 1
        else:
            flags[tok] = None
        i += 1
    return flags


def test_mlflow_server_started_in_background(name):
    command = mlflow_server_command(load(name))
    assert re.search(r"\bnohup\s+mlflow server\b", command), "start it with nohup so it survives the SSH session"
    assert re.search(r"&\s*(fi\s*)?$", command), "it must run in the background, or `ray up` hangs"
    assert re.search(r">\s*\S+", command), "redirect its output to a log file"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_mlflow_server_command_is_valid_bash(name):
    command = mlflow_server_command(load(name))
    result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


def test_mlflow_server_flags(name):
    flags = mlflow_flags(mlflow_server_command(load(name)))

    host = flags.get("--host") or flags.get("-h")
    assert host, "bind MLflow to the head's private address with --host (its default is 127.0.0.1)"
    assert host not in {"0.0.0.0", "::", "[::]", "*"}, "MLflow must not listen on all interfaces"
    assert host not in {"localhost", "::1"} and not host.startswith("127."), "workers could not reach it"
    if "$" not in host:  # a literal address must be a private one
        assert ipaddress.ip_address(host).is_private, host

    assert flags.get("--port") == "5000"
    backend = flags.get("--backend-store-uri")
    assert backend and DB_URI.match(backend), f"--backend-store-uri must be a database, got {backend!r}"
    assert "--serve-artifacts" in flags and "--no-serve-artifacts" not in flags
    assert flags.get("--artifacts-destination"), "say where the proxied artifacts go"
    allowed = flags.get("--allowed-hosts")
    if allowed is not None:
        assert "*" not in [h.strip() for h in allowed.split(",")], "--allowed-hosts must not allow every host"


def test_ray_dashboard_not_on_all_interfaces(name):
    head_start = " ".join(load(name)["head_start_ray_commands"])
    assert "ray start --head" in head_start
    assert not re.search(r"--dashboard-host[= ]+0\.0\.0\.0", head_start)


def test_aws_security_group_keeps_ports_closed():
    security_group = load("aws")["provider"].get("security_group", {})
    for rule in security_group.get("IpPermissions", []):
        low, high = rule.get("FromPort", 0), rule.get("ToPort", 65535)
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges", [])] + [
            r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])
        ]
        for port in (5000, 8265):
            assert not (low <= port <= high and {"0.0.0.0/0", "::/0"} & set(ranges)), (
                f"port {port} open to the internet"
            )


# --------------------------------------------------------------------------- nodes and setup


def installs_kdsweep(command: str) -> bool:
    """`pip install` with a requirement named kdsweep (`kdsweep @ git+...`, `kdsweep==...`) or a path to a checkout."""
    if "pip install" not in command:
        return False
    args = shlex.split(command.split("pip install", 1)[1])
    return any(re.match(r"kdsweep(\[[^\]]*\])?\s*(@|==|>=|~=|$)", a) or re.search(r"(^|/)kdsweep/?$", a) for a in args)


def test_every_node_installs_kdsweep_torch_and_storage(name):
    config = launcher_validate(load(name))  # merged: setup_commands are prepended to head/worker setup
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = config[key]
        assert any(installs_kdsweep(c) for c in commands), f"{key} must pip install kdsweep"
        assert any(re.search(r"pip install .*\btorch\b", c) for c in commands), f"{key} must install torch"
        assert any(re.search(r"\bray\[[^\]]*\]", c) for c in commands), f"{key} must install ray"
        assert any("KDSWEEP_STORAGE=" in c for c in commands), f"{key} must set the shared Tune storage"
    storage = re.search(r"KDSWEEP_STORAGE=([^'\"\s]+)", " ".join(config["setup_commands"])).group(1)
    if name == "aws":
        assert storage.startswith("s3://"), "on AWS the Tune storage must be shared: s3://..."
    else:
        assert storage.startswith(("/", "s3://", "gs://")), storage


def test_aws_nodes():
    raw = load("aws")
    assert raw["auth"]["ssh_user"] == "ubuntu"
    assert isinstance(raw.get("max_workers"), int) and raw["max_workers"] >= 1
    node_types = raw["available_node_types"]
    head = node_types[raw["head_node_type"]]
    assert not head["resources"].get("GPU"), "the head is a CPU node"
    workers = {k: v for k, v in node_types.items() if k != raw["head_node_type"]}
    assert workers, "there must be a worker node type"
    for node_name, node in workers.items():
        assert "min_workers" in node and "max_workers" in node, f"{node_name}: set min_workers and max_workers"
        assert 0 <= node["min_workers"] <= node["max_workers"] <= raw["max_workers"], node_name
        assert node["max_workers"] >= 1, node_name
        gpus = node["resources"].get("GPU")
        instance_type = node["node_config"]["InstanceType"]
        assert gpus == 1 or (gpus is None and instance_type in ONE_GPU_INSTANCE_TYPES), (
            f"{node_name}: worker must provide one GPU"
        )
    for node_name, node in node_types.items():
        assert node["node_config"].get("ImageId", "").startswith("ami-"), f"{node_name}: set an AMI"


def test_local_nodes():
    raw = load("local")
    provider = raw["provider"]
    assert provider["head_ip"] and provider["worker_ips"]
    assert isinstance(raw.get("max_workers"), int) and 1 <= raw["max_workers"] <= len(provider["worker_ips"])
    assert raw["auth"]["ssh_user"]


# --------------------------------------------------------------------------- hygiene


def _marked_change_me(lines: list[str], index: int) -> bool:
    """The line itself, or the comment block right above it, says CHANGE ME."""
    if "CHANGE ME" in lines[index]:
        return True
    i = index - 1
    while i >= 0 and lines[i].strip().startswith("#"):
        if "CHANGE ME" in lines[i]:
            return True
        i -= 1
    return False


def test_values_to_change_are_marked(name):
    lines = CONFIG_FILES[name].read_text().splitlines()
    comments = [line for line in lines if line.strip().startswith("#")]
    placeholders = {
        p for line in lines if not line.strip().startswith("#") for p in re.findall(r"<YOUR_[A-Z_]+>", line)
    }
    assert placeholders, "expected <YOUR_...> placeholders"
    for placeholder in placeholders:
        assert any("CHANGE ME" in c and placeholder in c for c in comments), f"no CHANGE ME comment for {placeholder}"
    keys = {"aws": ["region:", "ImageId:"], "local": ["head_ip:", "worker_ips:", "ssh_user:"]}[name]
    for key in keys:
        hits = [i for i, line in enumerate(lines) if line.strip().startswith(key)]
        assert hits, key
        for i in hits:
            assert _marked_change_me(lines, i), f"line {i + 1} ({key}) needs a CHANGE ME comment"


SECRET_PATTERNS = [
    r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
    r"(?i)aws_secret_access_key|aws_session_token",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"\b(ghp|gho|github_pat)_[A-Za-z0-9_]{20,}",
    r"://[^/\s:@'\"]+:[^/\s@'\"]+@",  # user:password@ in a URI
]


def test_no_secrets_in_files(name):
    text = CONFIG_FILES[name].read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text), f"{CONFIG_FILES[name].name} matches secret pattern {pattern}"
