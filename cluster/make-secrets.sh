#!/usr/bin/env bash
# Make, on your own machine, the secrets a kdsweep cluster needs, in ~/.kdsweep-secrets (folders 700,
# files 600): never in this repository, never in the cluster YAML files. cluster.yaml and
# cluster-local.yaml copy them to every node with file_mounts (docs/cluster.md explains each):
#
#   ray_auth_token                  Ray's token          -> ~/.ray/auth_token      (every node)
#   mlflow_credentials              MLflow clients' login -> ~/.mlflow/credentials  (every node)
#   mlflow-server/basic_auth.ini    the MLflow server's basic-auth app: its admin account
#   mlflow-server/flask_secret_key  the key it signs its CSRF tokens with
#                                   (mlflow-server/ -> ~/.kdsweep-secrets/mlflow-server, every node)
#
# Files that exist are kept, so rerunning it changes nothing; to rotate a secret, delete its file(s),
# run it again and follow docs/cluster.md ("Rotating a secret").
set -euo pipefail

DIR="$HOME/.kdsweep-secrets"
MLFLOW_USER=admin
umask 077
mkdir -p "$DIR/mlflow-server"
chmod 700 "$DIR" "$DIR/mlflow-server"

random_hex() { openssl rand -hex 32; }  # 256 bits, as the tokens Ray generates itself

if [ ! -e "$DIR/ray_auth_token" ]; then
    printf '%s' "$(random_hex)" > "$DIR/ray_auth_token"
    echo "wrote $DIR/ray_auth_token"
fi

if [ ! -e "$DIR/mlflow-server/flask_secret_key" ]; then
    printf '%s' "$(random_hex)" > "$DIR/mlflow-server/flask_secret_key"
    echo "wrote $DIR/mlflow-server/flask_secret_key"
fi

# The server's admin account and the clients' login share one password: write both or neither.
CREDENTIALS="$DIR/mlflow_credentials"
AUTH_CONFIG="$DIR/mlflow-server/basic_auth.ini"
if [ -e "$CREDENTIALS" ] && [ -e "$AUTH_CONFIG" ]; then
    exit 0
fi
if [ -e "$CREDENTIALS" ] || [ -e "$AUTH_CONFIG" ]; then
    echo "error: only one of $CREDENTIALS and $AUTH_CONFIG exists; delete it and run this again" >&2
    exit 2
fi
password=$(random_hex)
# MLflow clients read ~/.mlflow/credentials when MLFLOW_TRACKING_USERNAME/PASSWORD are not set.
printf '[mlflow]\nmlflow_tracking_username = %s\nmlflow_tracking_password = %s\n' \
    "$MLFLOW_USER" "$password" > "$CREDENTIALS"
# `mlflow server --app-name basic-auth` reads this file (MLFLOW_AUTH_CONFIG_PATH) and creates the admin
# on its first start. Its user database is relative to the server's working directory (~/mlflow on
# the head). Any other user gets no permission unless the admin grants one.
cat > "$AUTH_CONFIG" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///basic_auth.db
admin_username = $MLFLOW_USER
admin_password = $password
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
echo "wrote $CREDENTIALS and $AUTH_CONFIG (MLflow user '$MLFLOW_USER')"
