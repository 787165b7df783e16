#!/usr/bin/env bash
# Make, on your own machine, the secrets a kdsweep cluster needs, in ~/.kdsweep-secrets (folder 700,
# files 600): never in this repository, never in the cluster YAML files. cluster.yaml and
# cluster-local.yaml copy them to every node with file_mounts (docs/cluster.md explains each):
#
#   ray_auth_token       Ray's token                           -> ~/.ray/auth_token      (every node)
#   mlflow_credentials   MLflow clients' login, user 'kdsweep' -> ~/.mlflow/credentials  (every node)
#
# The MLflow login is a user, not the admin: the head makes its server's admin itself
# (cluster/mlflow-admin.sh, kept in ~/mlflow on the head only) and creates this user with it
# (cluster/mlflow_user.py). Files that exist are kept, so rerunning it changes nothing; to rotate a
# secret, delete its file, run it again and follow docs/cluster.md ("Rotating a secret").
set -euo pipefail

DIR="$HOME/.kdsweep-secrets"
MLFLOW_USER=kdsweep
umask 077
mkdir -p "$DIR"
chmod 700 "$DIR"

random_hex() { openssl rand -hex 32; }  # 256 bits, as the tokens Ray generates itself

if [ ! -e "$DIR/ray_auth_token" ]; then
    printf '%s' "$(random_hex)" > "$DIR/ray_auth_token"
    echo "wrote $DIR/ray_auth_token"
fi

CREDENTIALS="$DIR/mlflow_credentials"
if [ -e "$CREDENTIALS" ]; then
    if grep -q '^mlflow_tracking_username = admin$' "$CREDENTIALS"; then
        echo "error: $CREDENTIALS logs in as the MLflow admin, which workers must not hold;" \
            "delete it (and $DIR/mlflow-server) and run this again" >&2
        exit 2
    fi
    exit 0
fi
# MLflow clients read ~/.mlflow/credentials when MLFLOW_TRACKING_USERNAME/PASSWORD are not set.
printf '[mlflow]\nmlflow_tracking_username = %s\nmlflow_tracking_password = %s\n' \
    "$MLFLOW_USER" "$(random_hex)" > "$CREDENTIALS"
echo "wrote $CREDENTIALS (MLflow user '$MLFLOW_USER', not an admin)"
