"""On the head, once its MLflow server answers: make the login of ~/.mlflow/credentials a user, not an admin.

    python ~/kdsweep-cluster/mlflow_user.py http://HEAD_IP:5000

Every node's MLflow clients (the sweep's driver and every trial) log in with ~/.mlflow/credentials,
which cluster/make-secrets.sh writes and file_mounts copy to every node: a user with no permission but
what it creates (MANAGE on the sweeps' experiments and registered models), never the admin. This script
creates that user with the admin login of ~/mlflow/basic_auth.ini (cluster/mlflow-admin.sh: on the head
only), or sets its password when it exists (a rotated secret). Run again, it changes nothing.
"""

from __future__ import annotations

import configparser
import os
import sys
import time
import urllib.request
from pathlib import Path

from mlflow.exceptions import RestException
from mlflow.server.auth.client import AuthServiceClient
from mlflow.utils.credentials import read_mlflow_creds

AUTH_CONFIG = Path("~/mlflow/basic_auth.ini").expanduser()


def wait_until_up(uri: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5):
                return
        except OSError:
            if time.time() > deadline:
                raise SystemExit(f"error: MLflow at {uri} did not answer /health in {timeout_s:.0f} s") from None
            time.sleep(1)


def main(uri: str) -> int:
    admin = configparser.ConfigParser()
    admin.read(AUTH_CONFIG)
    admin_name, admin_password = admin["mlflow"]["admin_username"], admin["mlflow"]["admin_password"]
    for variable in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(variable, None)  # the nodes' login: from ~/.mlflow/credentials, as every client reads it
    user = read_mlflow_creds()
    if not user.username or not user.password:
        raise SystemExit("error: ~/.mlflow/credentials holds no login (cluster/make-secrets.sh writes it)")
    if user.username == admin_name:
        raise SystemExit(
            f"error: ~/.mlflow/credentials logs in as the admin '{admin_name}', which workers must not hold: "
            "delete ~/.kdsweep-secrets/mlflow_credentials, run cluster/make-secrets.sh and `ray up` again"
        )
    wait_until_up(uri)
    os.environ.update(MLFLOW_TRACKING_USERNAME=admin_name, MLFLOW_TRACKING_PASSWORD=admin_password)
    client = AuthServiceClient(uri)
    try:
        client.get_user(user.username)
    except RestException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(user.username, user.password)
        print(f"MLflow: created user '{user.username}' (not an admin)")
        return 0
    client.update_user_password(user.username, user.password)
    client.update_user_admin(user.username, False)
    print(f"MLflow: user '{user.username}' has the password of ~/.mlflow/credentials (not an admin)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
