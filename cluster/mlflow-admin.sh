#!/usr/bin/env bash
# On the head only, before its MLflow server starts: the server's admin account and CSRF key, made here
# and kept in ~/mlflow (folder 700, files 600), never copied to another node. cluster.yaml and
# cluster-local.yaml run it from head_start_ray_commands. Workers get no admin secret: every node's
# MLflow clients log in as the non-admin user of ~/.mlflow/credentials (cluster/make-secrets.sh), which
# cluster/mlflow_user.py creates with this admin once the server runs. Files that exist are kept.
#
#   ~/mlflow/basic_auth.ini    `mlflow server --app-name basic-auth` reads it (MLFLOW_AUTH_CONFIG_PATH) and
#                              creates the admin on its first start; read it to log in as admin:
#                              ray exec cluster.yaml 'cat ~/mlflow/basic_auth.ini'
#   ~/mlflow/flask_secret_key  the key it signs its CSRF tokens with (MLFLOW_FLASK_SERVER_SECRET_KEY)
set -euo pipefail

DIR="$HOME/mlflow"
umask 077
mkdir -p "$DIR"
chmod 700 "$DIR"

random_hex() { openssl rand -hex 32; }

if [ ! -e "$DIR/flask_secret_key" ]; then
    printf '%s' "$(random_hex)" > "$DIR/flask_secret_key"
fi

# Its user database is relative to the server's working directory (~/mlflow). Any user but the admin
# gets no permission unless granted one, or unless it created the experiment or model (MANAGE on it).
if [ ! -e "$DIR/basic_auth.ini" ]; then
    cat > "$DIR/basic_auth.ini" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///basic_auth.db
admin_username = admin
admin_password = $(random_hex)
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    echo "wrote $DIR/basic_auth.ini (MLflow admin 'admin')"
fi
