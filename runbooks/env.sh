# The runbooks' environment, from one place: `source runbooks/env.sh` from the repository root.
#
# AWS shell: CONVEYOR_STACK=<stack> source runbooks/env.sh  (Pulumi CLI and AWS credentials)
#   exports the stack's outputs: AWS_REGION, CONVEYOR_QUEUE_URL/DLQ_URL/TABLE_NAME, each lane's
#   CONVEYOR_QUEUE_URL_<LANE>/DLQ_URL_<LANE> (conveyor.settings.QueueSettings),
#   CONVEYOR_API_ADDRESS, CLUSTER, API_SERVICE, RELAY_SERVICE, WORKER_SERVICE and
#   API_LOG_GROUP, RELAY_LOG_GROUP, WORKER_LOG_GROUP.
# Local shell (make local): source runbooks/env.sh
#   sources ${CONVEYOR_ENV_FILE:-.local/conveyor.env}, written by make local at start-up.
#
# It sets nothing unless every value is there: a missing pulumi, stack output or env file is
# an error (status 1) with the environment left as it was, never an empty variable.

_conveyor_env() {
    if [ -z "${CONVEYOR_STACK:-}" ]; then
        local file="${CONVEYOR_ENV_FILE:-.local/conveyor.env}"
        if [ ! -r "$file" ]; then
            echo "runbooks/env.sh: no $file (start make local), or set CONVEYOR_STACK for AWS" >&2
            return 1
        fi
        # shellcheck disable=SC1090
        . "$file"
        echo "runbooks/env.sh: local system from $file (run ${CONVEYOR_LOCAL_RUN:-?})" >&2
        return 0
    fi
    if ! command -v pulumi >/dev/null; then
        echo "runbooks/env.sh: CONVEYOR_STACK is set but pulumi is not installed" >&2
        return 1
    fi
    local outputs
    outputs=$(pulumi stack output --stack "$CONVEYOR_STACK" --json) || return 1
    local pairs
    pairs=$(printf '%s' "$outputs" | jq -r '
        [["AWS_REGION", .region], ["CONVEYOR_QUEUE_URL", .queue_url],
         ["CONVEYOR_DLQ_URL", .dlq_url], ["CONVEYOR_QUEUE_URL_HIGH", .queue_url_high],
         ["CONVEYOR_DLQ_URL_HIGH", .dlq_url_high], ["CONVEYOR_TABLE_NAME", .table_name],
         ["CONVEYOR_API_ADDRESS", .api_endpoint], ["CLUSTER", .cluster_name],
         ["API_SERVICE", .api_service_name], ["RELAY_SERVICE", .relay_service_name],
         ["WORKER_SERVICE", .worker_service_name],
         ["API_LOG_GROUP", .log_group_names.api], ["RELAY_LOG_GROUP", .log_group_names.relay],
         ["WORKER_LOG_GROUP", .log_group_names.worker]]
        | .[] | "\(.[0])=\(.[1] // "")"') || return 1
    local missing
    missing=$(printf '%s\n' "$pairs" | sed -n 's/^\([A-Z_]*\)=$/\1/p')
    if [ -n "$missing" ]; then
        echo "runbooks/env.sh: stack $CONVEYOR_STACK has no output for:" $missing >&2
        return 1
    fi
    local pair
    while IFS= read -r pair; do
        export "${pair%%=*}=${pair#*=}"
    done <<<"$pairs"
    echo "runbooks/env.sh: stack $CONVEYOR_STACK in $AWS_REGION" >&2
}
_conveyor_env
