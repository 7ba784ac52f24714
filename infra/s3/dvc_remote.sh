#!/usr/bin/env bash
# Configure the DVC remote "storage" from the same settings as the artifact store (infra/s3/s3.env):
#   set -a; . infra/s3/s3.env; set +a; bash infra/s3/dvc_remote.sh; dvc push
# The URL goes into .dvc/config (committed); the endpoint into .dvc/config.local (per machine);
# the keys stay in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
set -euo pipefail
: "${GNVC_DVC_REMOTE_URL:?set GNVC_DVC_REMOTE_URL, e.g. s3://my-gnvc-bucket/dvc-cache}"
dvc remote add --force --default storage "$GNVC_DVC_REMOTE_URL"
if [[ -n "${GNVC_S3_ENDPOINT_URL:-}" ]]; then
  dvc remote modify --local storage endpointurl "$GNVC_S3_ENDPOINT_URL"
fi
if [[ -n "${AWS_DEFAULT_REGION:-}" ]]; then
  dvc remote modify storage region "$AWS_DEFAULT_REGION"
fi
dvc remote list
