"""Check cluster.yaml (AWS) and cluster-local.yaml (on-prem) with Ray's own cluster-launcher code.

`ray up` loads the YAML, merges the provider defaults (`prepare_config`) and validates the result against
Ray's JSON schema plus a few cross-field rules (`validate_config`). These tests run exactly those steps,
skipping only the AWS-specific ones that call the cloud API, and then check the parts of the files this
project relies on: the MLflow server on the head, the pinned install every node runs (cluster/setup-node.sh,
cluster/requirements.txt), the GPU workers and the trials each runs, the IAM policies and security group,
Ray's token and MLflow's login reaching every node (cluster/make-secrets.sh). The shell scripts run here
with stubs for uv and curl; nothing reaches AWS or the network.
"""

from __future__ import annotations

import copy
import importlib.util
import ipaddress
import json
import math
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = {"aws": ROOT / "cluster.yaml", "local": ROOT / "cluster-local.yaml"}
CLUSTER_DIR = ROOT / "cluster"  # copied to every node by file_mounts
NODE_DIR = "~/kdsweep-cluster"  # ... to here
SETUP_SCRIPT = CLUSTER_DIR / "setup-node.sh"
REQUIREMENTS = CLUSTER_DIR / "requirements.txt"
MAKE_SECRETS = CLUSTER_DIR / "make-secrets.sh"
AWS_POLICIES = CLUSTER_DIR / "aws"
SECRETS_DIR = "~/.kdsweep-secrets"  # on the machine that runs `ray up`, made by make-secrets.sh
README = ROOT / "README.md"
SCALING_DOC = ROOT / "docs" / "scaling.md"  # how a sweep runs on the cluster: the launcher's Ray, trials per worker
SPACES = [ROOT / "kdsweep" / "search_spaces" / "cifar10.yaml", ROOT / "kdsweep" / "search_spaces" / "cifar100.yaml"]
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
    ("aws", "rsync_filter not a list", _set("rsync_filter", ".gitignore"), SCHEMA_ERROR),
    ("local", "rsync_exclude not a list", _set("rsync_exclude", ".git"), SCHEMA_ERROR),
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
    assert host not in {"localhost", "::1"}, "workers could not reach it"
    assert not host.startswith("127."), "workers could not reach it"
    if "$" not in host:  # a literal address must be a private one
        assert ipaddress.ip_address(host).is_private, host

    assert flags.get("--port") == "5000"
    backend = flags.get("--backend-store-uri")
    assert backend, f"--backend-store-uri must be a database, got {backend!r}"
    assert DB_URI.match(backend), f"--backend-store-uri must be a database, got {backend!r}"
    assert "--serve-artifacts" in flags
    assert "--no-serve-artifacts" not in flags
    assert flags.get("--artifacts-destination"), "say where the proxied artifacts go"
    allowed = flags.get("--allowed-hosts")
    if allowed is not None:
        assert "*" not in [h.strip() for h in allowed.split(",")], "--allowed-hosts must not allow every host"


def test_mlflow_server_runs_as_kdsweeps_own_server_does(name):
    """sqlite behind ONE server process with MLflow's job runner off (kdsweep.tracking.server's settings)."""
    command = mlflow_server_command(load(name))
    flags = mlflow_flags(command)
    if flags["--backend-store-uri"].startswith("sqlite"):
        assert flags.get("--workers") == "1", "several server processes writing one sqlite file: 'database is locked'"
    prefix = command.split("nohup mlflow server", 1)[0]
    assert re.search(r"\bMLFLOW_SERVER_ENABLE_JOB_EXECUTION=false\s", prefix), "turn MLflow's job runner off"


def test_mlflow_server_requires_a_login(name):
    """MLflow's basic-auth app, its admin account and CSRF key made on the head (cluster/mlflow-admin.sh, before
    the server starts) in ~/mlflow, which no file_mounts entry reaches: workers never get the admin. Its user
    database is there too (the config names it relative to the server's working directory)."""
    config = load(name)
    command = mlflow_server_command(config)
    assert mlflow_flags(command).get("--app-name") == "basic-auth"
    prefix = command.split("nohup mlflow server", 1)[0]
    auth_config = re.search(r'MLFLOW_AUTH_CONFIG_PATH="?\$\{HOME\}(/[^"\s]+)', prefix).group(1)
    secret_key = re.search(r'MLFLOW_FLASK_SERVER_SECRET_KEY="?\$\(cat ~(/[^)"\s]+)\)', prefix).group(1)
    assert (auth_config, secret_key) == ("/mlflow/basic_auth.ini", "/mlflow/flask_secret_key")
    copied = [remote.removeprefix("~").rstrip("/") for remote in config["file_mounts"]]
    for path in (auth_config, secret_key):
        assert not any(path == remote or path.startswith(remote + "/") for remote in copied), (
            f"~{path} holds the MLflow admin's secrets: file_mounts would copy it to every worker"
        )
    assert re.match(r"mkdir -p ~/mlflow && cd ~/mlflow && bash ~/kdsweep-cluster/mlflow-admin.sh && ", command), (
        "make the admin in ~/mlflow, and start the server there"
    )
    assert config["file_mounts"].get("~/.mlflow/credentials", "").startswith(SECRETS_DIR + "/"), (
        "every node's MLflow clients need the login: ~/.mlflow/credentials"
    )
    commands = config["head_start_ray_commands"]
    after = commands[commands.index(command) + 1 :]
    assert after, "once the server runs, make the nodes' login a user"
    assert after[0] == 'python ~/kdsweep-cluster/mlflow_user.py "$(cat ~/mlflow/tracking_uri)"'


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


def test_every_node_runs_the_one_setup_script_and_gets_the_storage(name):
    config = launcher_validate(load(name))  # merged: setup_commands are prepended to head/worker setup
    assert config["file_mounts"].get(NODE_DIR) == "cluster", f"copy cluster/ to {NODE_DIR} on every node"
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = config[key]
        assert f"bash {NODE_DIR}/setup-node.sh" in commands, f"{key} must run the setup script"
        assert any("KDSWEEP_STORAGE=" in c for c in commands), f"{key} must set the shared Tune storage"
    storage = re.search(r"KDSWEEP_STORAGE=([^'\"\s]+)", " ".join(config["setup_commands"])).group(1)
    if name == "aws":
        assert storage.startswith("s3://"), "on AWS the Tune storage must be shared: s3://..."
    else:
        assert storage.startswith(("/", "s3://", "gs://")), storage


def test_nothing_but_the_setup_script_installs_packages(name):
    """One place for every version: a `pip install` in a YAML file would be a second, per-node-type one."""
    raw = load(name)
    keys = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands"]
    keys += ["head_start_ray_commands", "worker_start_ray_commands"]
    for key in keys:
        for command in raw.get(key) or []:
            assert not re.search(r"\b(pip|uv|conda)\b.*\binstall\b", command), f"{key} installs: {command}"


def test_aws_nodes():
    raw = load("aws")
    assert raw["auth"]["ssh_user"] == "ubuntu"
    assert isinstance(raw.get("max_workers"), int)
    assert raw["max_workers"] >= 1
    node_types = raw["available_node_types"]
    head = node_types[raw["head_node_type"]]
    assert not head["resources"].get("GPU"), "the head is a CPU node"
    workers = {k: v for k, v in node_types.items() if k != raw["head_node_type"]}
    assert workers, "there must be a worker node type"
    for node_name, node in workers.items():
        assert "min_workers" in node, f"{node_name}: set min_workers and max_workers"
        assert "max_workers" in node, f"{node_name}: set min_workers and max_workers"
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
    assert provider["head_ip"]
    assert provider["worker_ips"]
    assert isinstance(raw.get("max_workers"), int)
    assert 1 <= raw["max_workers"] <= len(provider["worker_ips"])
    assert raw["auth"]["ssh_user"]


# --------------------------------------------------------------------------- versions, pinned in one place


def requirements() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def script_setting(key: str) -> str:
    return re.search(rf"^{key}=(\S+)$", SETUP_SCRIPT.read_text(), re.MULTILINE).group(1)


def test_requirements_pin_every_package_exactly():
    found = {}
    for requirement in requirements():
        if requirement.name == "kdsweep":
            assert requirement.url, "install kdsweep from a git tag or commit: kdsweep @ git+https://...git@TAG"
            assert re.search(r"^git\+\S+\.git@[\w.\-]+$", requirement.url), (
                "install kdsweep from a git tag or commit: kdsweep @ git+https://...git@TAG"
            )
            continue
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{requirement}: pin it with =="
        found[requirement.name.lower()] = (specifier.version, requirement.extras)
    expected = {"torch": "2.14.1", "torchvision": "0.29.1", "ray": "2.60.0", "mlflow": "3.17.2"}
    assert {name: found[name][0] for name in expected} == expected
    assert {"default", "tune"} <= found["ray"][1], "ray[default] (the autoscaler, the Jobs API) and ray[tune]"
    assert "auth" in found["mlflow"][1], "mlflow[auth]: the basic-auth app needs Flask-WTF"
    assert "boto3" in found, "the head's autoscaler launches workers with boto3"


def test_setup_script_pins_python_and_uv_to_the_patch_version():
    assert re.fullmatch(r"3\.11\.\d+", script_setting("PYTHON_VERSION")), "pin Python's patch version"
    assert re.fullmatch(r"\d+\.\d+\.\d+", script_setting("UV_VERSION"))


def test_the_launcher_ray_in_the_scaling_doc_is_the_clusters():
    launcher = re.search(r'pip install "ray\[default\]==([\d.]+)"', SCALING_DOC.read_text()).group(1)
    assert launcher == next(str(r.specifier).removeprefix("==") for r in requirements() if r.name == "ray")


def _stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


# uv and curl as a node would run them, logged: uv reports the version the test asks for and, asked for a
# venv, makes one whose python reports the pinned version; curl fails (no network here).
UV_STUB = """echo "uv $*" >> "$STUB_LOG"
if [ "$1" = --version ]; then echo "uv $STUB_UV_VERSION (stub)"; fi
if [ "$1" = venv ]; then
    venv="${@: -1}"; mkdir -p "$venv/bin"
    printf '#!/bin/sh\\necho "Python %s"\\n' "$STUB_PYTHON_VERSION" > "$venv/bin/python"; chmod +x "$venv/bin/python"
fi
"""
CURL_STUB = 'echo "curl $*" >> "$STUB_LOG"; exit 7\n'


def run_setup_script(home: Path, uv_version: str, venv_python: str | None) -> tuple[int, list[str]]:
    """Run cluster/setup-node.sh from the copy a node has, with stub uv/curl; (exit code, logged calls)."""
    shutil.copytree(CLUSTER_DIR, home / "kdsweep-cluster", dirs_exist_ok=True)
    _stub(home / ".local" / "bin" / "uv", UV_STUB)
    _stub(home / "stubs" / "curl", CURL_STUB)
    if venv_python:
        _stub(home / "kdsweep-venv" / "bin" / "python", f'echo "Python {venv_python}"\n')
    log = home / "calls.log"
    log.unlink(missing_ok=True)
    env = {
        "HOME": str(home),
        "PATH": f"{home / 'stubs'}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "STUB_UV_VERSION": uv_version,
        "STUB_PYTHON_VERSION": script_setting("PYTHON_VERSION"),
    }
    script = home / "kdsweep-cluster" / "setup-node.sh"
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    calls = [c for c in log.read_text().splitlines() if c != "uv --version"] if log.exists() else []
    return result.returncode, calls


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_script_replaces_a_venv_of_another_python_and_installs_the_pins(tmp_path):
    python = script_setting("PYTHON_VERSION")
    code, calls = run_setup_script(tmp_path, script_setting("UV_VERSION"), venv_python="3.11.1")
    assert code == 0
    assert calls == [
        f"uv venv --clear --seed --python {python} {tmp_path}/kdsweep-venv",
        f"uv pip install --python {tmp_path}/kdsweep-venv/bin/python -r {tmp_path}/kdsweep-cluster/requirements.txt",
    ]
    bashrc = (tmp_path / ".bashrc").read_text()
    assert 'export PATH="$HOME/kdsweep-venv/bin:$PATH"' in bashrc
    assert "export RAY_AUTH_MODE=token" in bashrc.splitlines(), "drivers and the ray CLI on a node need token mode"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_script_run_again_keeps_what_is_already_pinned(tmp_path):
    for _ in range(2):
        code, calls = run_setup_script(tmp_path, script_setting("UV_VERSION"), venv_python=None)
        assert code == 0
    assert [c.split()[1] for c in calls] == ["pip"], "the second run keeps uv and the venv, and installs the pins"
    assert (tmp_path / ".bashrc").read_text().count("RAY_AUTH_MODE") == 1


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_script_fetches_the_pinned_uv_when_another_is_there(tmp_path):
    version = script_setting("UV_VERSION")
    code, calls = run_setup_script(tmp_path, "0.0.1", venv_python=None)
    assert code != 0, "with no network the install fails, and so does the setup"
    assert calls == [f"curl -LsSf https://astral.sh/uv/{version}/install.sh"]


# --------------------------------------------------------------------------- trials per GPU worker


NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "eight": 8}


def test_trials_per_worker_fill_its_gpu_and_match_the_scaling_doc():
    raw = load("aws")
    (worker,) = [node for key, node in raw["available_node_types"].items() if key != raw["head_node_type"]]
    cpus, gpus = worker["resources"]["CPU"], worker["resources"]["GPU"]
    claimed = NUMBERS[re.search(r"each worker runs (\w+) trials", SCALING_DOC.read_text()).group(1)]
    for path in SPACES:
        space = yaml.safe_load(path.read_text())
        per_trial = space["resources"]
        fit = min(
            math.floor(cpus / per_trial["cpus_per_trial"] + 1e-9), math.floor(gpus / per_trial["gpus_per_trial"] + 1e-9)
        )
        assert fit * per_trial["gpus_per_trial"] == gpus, f"{path.name}: {fit} trials leave part of the GPU idle"
        assert fit == claimed, f"{path.name}: {fit} trials per worker, docs/scaling.md says {claimed}"
        assert fit * worker["max_workers"] == space["searcher"]["max_concurrent"], path.name


# --------------------------------------------------------------------------- AWS: IAM and network


def policy(name: str) -> dict:
    return json.loads((AWS_POLICIES / name).read_text())


def statements(document: dict, action: str) -> list[dict]:
    """The Allow statements that grant this action."""
    found = []
    for statement in document["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if statement["Effect"] == "Allow" and action in actions:
            found.append(statement)
    return found


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def profile_names() -> dict[str, str]:
    raw = load("aws")
    return {
        key: node["node_config"]["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1]
        for key, node in raw["available_node_types"].items()
    }


def test_head_and_workers_have_their_own_instance_profiles():
    """Ray gives the head its ray-autoscaler-v1 profile only when the head names none; workers must have theirs."""
    raw = load("aws")
    names = profile_names()
    head = names.pop(raw["head_node_type"])
    assert head != "ray-autoscaler-v1"
    assert names
    assert all(worker not in (head, "ray-autoscaler-v1") for worker in names.values())


def test_head_may_pass_the_worker_role_and_no_other():
    """Launching an instance with a profile needs iam:PassRole on its role (ray-project/ray#9327)."""
    raw = load("aws")
    workers = {v for k, v in profile_names().items() if k != raw["head_node_type"]}
    (passing,) = statements(policy("head-policy.json"), "iam:PassRole")
    roles = {arn.split(":role/", 1)[1] for arn in as_list(passing["Resource"])}
    assert roles == workers, "the worker role and profile share a name (docs/cluster.md makes them so)"
    assert passing["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com"
    (managing,) = [s for s in statements(policy("head-policy.json"), "ec2:TerminateInstances")]
    assert managing["Condition"]["StringEquals"]["ec2:ResourceTag/ray-cluster-name"] == raw["cluster_name"]


def test_workers_reach_only_the_tune_prefix_of_the_bucket():
    raw = load("aws")
    storage = re.search(r"KDSWEEP_STORAGE=s3://([^'\"\s]+)", " ".join(raw["setup_commands"])).group(1)
    artifacts = mlflow_flags(mlflow_server_command(raw))["--artifacts-destination"].removeprefix("s3://")
    worker = policy("worker-policy.json")
    for statement in worker["Statement"]:
        assert statement["Effect"] == "Allow"
        assert all(a.startswith("s3:") and "*" not in a for a in as_list(statement["Action"])), statement["Sid"]
    objects = [r for s in statements(worker, "s3:PutObject") for r in as_list(s["Resource"])]
    assert sorted(objects) == [f"arn:aws:s3:::{storage}", f"arn:aws:s3:::{storage}/*"]
    head_objects = {r for s in statements(policy("head-policy.json"), "s3:PutObject") for r in as_list(s["Resource"])}
    assert {f"arn:aws:s3:::{storage}/*", f"arn:aws:s3:::{artifacts}/*"} <= head_objects, "Tune and MLflow's artifacts"
    assert not any(artifacts.startswith(o.removeprefix("arn:aws:s3:::").rstrip("*/")) for o in objects), (
        "workers upload artifacts through the MLflow server, never to its bucket prefix"
    )


def test_aws_nodes_use_your_security_group_not_rays_default():
    """Ray creates a group (SSH open to 0.0.0.0/0, `_create_default_ssh_inbound_rules`) for any node type that
    names no SecurityGroupIds (`_configure_security_group`); provider.security_group can only add rules to it."""
    raw = load("aws")
    for key, node in raw["available_node_types"].items():
        assert node["node_config"].get("SecurityGroupIds"), f"{key}: name your security group"
    assert "security_group" not in raw["provider"]


# --------------------------------------------------------------------------- Ray's token and MLflow's login


def test_every_ray_start_uses_token_authentication(name):
    raw = load(name)
    starts = [
        c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in raw[key] if "ray start" in c
    ]
    assert len(starts) == 2
    for command in starts:
        assert re.search(r"\bRAY_AUTH_MODE=token\b[^;&|]*\bray start\b", command), command
    token = raw["file_mounts"].get("~/.ray/auth_token", "")
    assert token.startswith(SECRETS_DIR + "/"), "ship the token to ~/.ray/auth_token on every node"


def mlflow_auth_config_reader():
    """MLflow's own reader of the basic-auth config (mlflow/server/auth/config.py), loaded by its path:
    importing its package needs Flask-WTF, which only the head installs (mlflow[auth])."""
    import mlflow

    spec = importlib.util.spec_from_file_location(
        "mlflow_auth_config", Path(mlflow.__file__).parent / "server/auth/config.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_auth_config


@pytest.mark.skipif(shutil.which("openssl") is None, reason="make-secrets.sh needs openssl")
def test_make_secrets_writes_every_secret_the_files_copy(tmp_path, monkeypatch):
    env = {**os.environ, "HOME": str(tmp_path)}
    for _ in range(2):  # the second run keeps what the first wrote
        subprocess.run(["bash", str(MAKE_SECRETS)], env=env, check=True, capture_output=True, timeout=60)
        if _ == 0:
            first = {p: p.read_bytes() for p in (tmp_path / ".kdsweep-secrets").rglob("*") if p.is_file()}
    assert {p: p.read_bytes() for p in first} == first
    for name in CONFIG_FILES:
        for remote, local in load(name)["file_mounts"].items():
            if local.startswith(SECRETS_DIR):
                assert (tmp_path / local.removeprefix("~/")).exists(), f"{name}: {local} for {remote}"
    for path in [tmp_path / ".kdsweep-secrets", *first]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    assert re.fullmatch(r"[0-9a-f]{64}", (tmp_path / ".kdsweep-secrets" / "ray_auth_token").read_text())

    # As on a node: the clients' login (~/.mlflow/credentials) is a user, not the admin the head makes.
    from mlflow.utils.credentials import read_mlflow_creds

    (tmp_path / ".mlflow").mkdir()
    shutil.copy(tmp_path / ".kdsweep-secrets" / "mlflow_credentials", tmp_path / ".mlflow" / "credentials")
    for _ in range(2):  # on the head, before every server start: the second run keeps what the first wrote
        subprocess.run(["bash", str(CLUSTER_DIR / "mlflow-admin.sh")], env=env, check=True, capture_output=True)
    head = tmp_path / "mlflow"
    assert head.stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in head.iterdir())
    assert re.fullmatch(r"[0-9a-f]{64}", (head / "flask_secret_key").read_text())
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(head / "basic_auth.ini"))
    for variable in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    server, client = mlflow_auth_config_reader()(), read_mlflow_creds()
    assert (server.admin_username, client.username) == ("admin", "kdsweep")
    assert client.password != server.admin_password
    assert len(server.admin_password) >= 32
    assert len(client.password) >= 32
    assert server.default_permission == "NO_PERMISSIONS"
    assert server.database_uri == "sqlite:///basic_auth.db", "relative: in ~/mlflow, where the server starts"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="make-secrets.sh needs openssl")
def test_make_secrets_refuses_a_login_that_is_the_mlflow_admin(tmp_path):
    """Secrets made before workers got a user of their own: the nodes' login is the admin, refused."""
    secrets = tmp_path / ".kdsweep-secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "mlflow_credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = admin\nmlflow_tracking_password = x\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run(["bash", str(MAKE_SECRETS)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "logs in as the MLflow admin" in out.stderr


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
def test_rsync_excludes_keep_local_state_off_the_nodes(name, tmp_path):
    """What `ray up` would copy of a checkout (the commented file_mounts alternative), with Ray's own rsync options."""
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    raw = load(name)
    checkout = tmp_path / "checkout"
    wanted = ["kdsweep/__init__.py", "kdsweep/search_spaces/cifar10.yaml", ".gitignore"]
    unwanted = [".git/HEAD", ".venv/bin/python", "mlruns/0/meta.yaml", "mlartifacts/1/model.pth", "mlflow.db"]
    unwanted += ["kdsweep_results/sweep/result.json", "kdsweep/__pycache__/x.pyc"]
    for relative in wanted + unwanted:
        (checkout / relative).parent.mkdir(parents=True, exist_ok=True)
        (checkout / relative).write_text("x")
    shutil.copy(ROOT / ".gitignore", checkout / ".gitignore")
    options = {"rsync_exclude": raw.get("rsync_exclude"), "rsync_filter": raw.get("rsync_filter")}
    args = SSHCommandRunner._create_rsync_filter_args(None, options)
    subprocess.run(["rsync", "-a", *args, f"{checkout}/", f"{tmp_path / 'node'}/"], check=True, timeout=60)
    copied = sorted(str(p.relative_to(tmp_path / "node")) for p in (tmp_path / "node").rglob("*") if p.is_file())
    assert copied == sorted(wanted)


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


def test_no_secrets_in_the_files_copied_to_the_nodes():
    """cluster/ ships to every node: templates and scripts only, no token or password in it."""
    for path in sorted(p for p in CLUSTER_DIR.rglob("*") if p.is_file()):
        text = path.read_text()
        for pattern in [
            *SECRET_PATTERNS,
            r"\b[0-9a-f]{32,}\b",
            r"(?m)^\s*(admin_password|mlflow_tracking_password)\s*=\s*\w",
        ]:
            assert not re.search(pattern, text), f"{path.relative_to(ROOT)} matches secret pattern {pattern}"


def test_the_docs_the_files_point_to_exist():
    for path in [*CONFIG_FILES.values(), README, *CLUSTER_DIR.rglob("*.sh"), REQUIREMENTS]:
        for doc in re.findall(r"\bdocs/[\w./-]+\.md\b", path.read_text()):
            assert (ROOT / doc).is_file(), f"{path.name} points to {doc}, which does not exist"


def _alive_node(address: str, resources: dict[str, float], head: bool = False) -> dict:
    """One entry of `ray.nodes()`, with the fields the node-type rule reads."""
    extra = {"node:__internal_head__": 1.0} if head else {}
    return {
        "NodeID": f"id-{address}",
        "Alive": True,
        "NodeManagerAddress": address,
        "Resources": {**resources, f"node:{address}": 1.0, "memory": 8e9, "object_store_memory": 2e9, **extra},
    }


def test_a_cpu_only_head_of_cluster_local_yaml_takes_trials_for_the_gpus_of_its_workers():
    """`ray up cluster-local.yaml` leaves ONE node type whose resources Ray detects on each machine: the
    head's CPUs are not every machine's, and trials asking for the workers' GPUs are accepted."""
    from ray.autoscaler._private.commands import _bootstrap_config

    from kdsweep.config import load_config
    from kdsweep.errors import ConfigError
    from kdsweep.sweep.resources import check_resources, node_types

    on_the_head = _bootstrap_config(load("local"), no_config_cache=True)  # ~/ray_bootstrap_config.yaml
    head = _alive_node("10.0.0.1", {"CPU": 4.0}, head=True)
    workers = [_alive_node(f"10.0.0.{i}", {"CPU": 8.0, "GPU": 1.0}) for i in (2, 3)]
    config = load_config(None, ["resources.gpus_per_trial=1", "resources.cpus_per_trial=4"])
    found = node_types([head, *workers], on_the_head)
    check_resources(config, found)
    assert sorted(t.node_id for t in found if t.fits({"CPU": 4, "GPU": 1})) == ["id-10.0.0.2", "id-10.0.0.3"]
    with pytest.raises(ConfigError, match=r"resources\.gpus_per_trial: 1 GPUs per trial, but no node"):
        check_resources(config, node_types([head], on_the_head))  # the workers have not joined
