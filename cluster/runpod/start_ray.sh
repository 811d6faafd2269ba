#!/usr/bin/env bash
# Bring up Ray on RunPod: a single pod, or every node of an Instant Cluster. Idempotent: run it
# again (after a reconnect, or from a pod's start command) and a node that already runs Ray in
# the right cluster is left alone.
#
#   cluster/runpod/start_ray.sh          # start (or confirm) Ray on this pod / node
#   cluster/runpod/start_ray.sh stop     # stop Ray on this pod / node
#   cluster/runpod/start_ray.sh status   # `ray status` of the cluster this node belongs to
#
# Single pod: no PRIMARY_ADDR set -> this pod is a one-node Ray cluster (head).
# Instant Cluster: RunPod sets PRIMARY_ADDR (the rank-0 node's address), NODE_RANK and
# NUM_NODES on every node. Rank 0 starts the head; the other ranks wait for it and join.
# Inter-node NCCL traffic goes over the cluster's private interface: NCCL_SOCKET_IFNAME
# (default ens1, RunPod's) is exported to Ray and so to every trial process.
#
# Settings (environment): RAY_PORT (6379), RAY_DASHBOARD_PORT (8265), RAY_DASHBOARD_HOST
# (127.0.0.1: reach it with an SSH port-forward; set 0.0.0.0 only behind a firewall you
# trust), RAY_NUM_GPUS / RAY_NUM_CPUS (default: detected), JOIN_TIMEOUT_S (300),
# RAY_START_ARGS (extra `ray start` arguments), RAY_BIN (ray).
#
# Authentication: Ray's token authentication is on (RAY_AUTH_MODE=token): every node and every
# client needs the cluster's token. Rank 0 uses RAY_AUTH_TOKEN, else ~/.ray/auth_token, else
# generates one there (`ray get-auth-token --generate`). The other ranks need the same token:
# put it in a RunPod secret exposed as RAY_AUTH_TOKEN on every node (or copy the file).
# Clients: `python -m orchestrator run ... --address` finds the token itself (RAY_AUTH_TOKEN, or
# ~/.ray/auth_token) from any shell; Ray's own CLI (`ray status`, `ray job submit`) needs
# RAY_AUTH_MODE=token exported in that shell too.
#
# Storage: pods share no disk. Run studies with `--storage s3://bucket/prefix` and give the
# pods credentials through RunPod's secrets / environment, never in a file of this repository.
set -euo pipefail

RAY_BIN=${RAY_BIN:-ray}
RAY_PORT=${RAY_PORT:-6379}
RAY_DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
RAY_DASHBOARD_HOST=${RAY_DASHBOARD_HOST:-127.0.0.1}
JOIN_TIMEOUT_S=${JOIN_TIMEOUT_S:-300}
NODE_RANK=${NODE_RANK:-0}
NUM_NODES=${NUM_NODES:-1}
PRIMARY_ADDR=${PRIMARY_ADDR:-}
ACTION=${1:-start}

log() { printf '[start_ray rank %s] %s\n' "$NODE_RANK" "$*" >&2; }
die() { log "error: $*"; exit 2; }

case "$NODE_RANK" in ''|*[!0-9]*) die "NODE_RANK must be a non-negative integer, got '$NODE_RANK'" ;; esac
case "$NUM_NODES" in ''|*[!0-9]*) die "NUM_NODES must be a positive integer, got '$NUM_NODES'" ;; esac
if [ "$NODE_RANK" -ge "$NUM_NODES" ]; then
  die "NODE_RANK ($NODE_RANK) must be below NUM_NODES ($NUM_NODES)"
fi
if [ "$NUM_NODES" -gt 1 ] && [ -z "$PRIMARY_ADDR" ]; then
  die "NUM_NODES=$NUM_NODES but PRIMARY_ADDR is not set (Instant Clusters set it on every node)"
fi
command -v "$RAY_BIN" >/dev/null 2>&1 || die "'$RAY_BIN' not found: pip install 'ray[default]' (the project's pyproject pins it)"

export RAY_AUTH_MODE=token
if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
  if [ "$NODE_RANK" -eq 0 ]; then
    log "no Ray auth token yet: generating ~/.ray/auth_token (share it with the other nodes as RAY_AUTH_TOKEN)"
    "$RAY_BIN" get-auth-token --generate >/dev/null
  else
    die "no Ray auth token: set RAY_AUTH_TOKEN (a RunPod secret) to the head's token"
  fi
fi

HEAD_ADDR=${PRIMARY_ADDR:-127.0.0.1}
ADDRESS="$HEAD_ADDR:$RAY_PORT"
# A custom resource per rank lets a re-run see whether this node is already in the cluster.
RANK_RESOURCE="node_rank_$NODE_RANK"

port_open() { (exec 3<>"/dev/tcp/$HEAD_ADDR/$RAY_PORT") 2>/dev/null; }
# `ray status` retries for a long time when nothing listens: ask it only once the port is open.
# (each `ray status` is a Python start-up, ~2 s on a small machine: asked once per check)
cluster_up() { port_open && "$RAY_BIN" status --address "$ADDRESS" >/dev/null 2>&1; }
node_joined() { port_open && "$RAY_BIN" status --address "$ADDRESS" 2>/dev/null | grep -q "$RANK_RESOURCE"; }
# wait_for CHECK INTERVAL_S MESSAGE: poll CHECK until it succeeds, or die after JOIN_TIMEOUT_S.
wait_for() {
  local waited=0
  until "$1"; do
    if [ "$waited" -ge "$JOIN_TIMEOUT_S" ]; then
      die "$3"
    fi
    sleep "$2"
    waited=$((waited + $2))
  done
}

start_args=(--resources "{\"$RANK_RESOURCE\": 1}")
if [ -n "${RAY_NUM_GPUS:-}" ]; then start_args+=(--num-gpus "$RAY_NUM_GPUS"); fi
if [ -n "${RAY_NUM_CPUS:-}" ]; then start_args+=(--num-cpus "$RAY_NUM_CPUS"); fi
if [ -n "${RAY_START_ARGS:-}" ]; then
  read -r -a extra <<<"$RAY_START_ARGS"
  start_args+=("${extra[@]}")
fi
if [ "$NUM_NODES" -gt 1 ]; then
  export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-ens1}
fi

case "$ACTION" in
  stop)
    "$RAY_BIN" stop
    exit 0
    ;;
  status)
    exec "$RAY_BIN" status --address "$ADDRESS"
    ;;
  start) ;;
  *) die "unknown action '$ACTION' (start | stop | status)" ;;
esac

if [ "$NODE_RANK" -eq 0 ]; then
  if node_joined; then
    log "Ray head already running at $ADDRESS; nothing to do"
  else
    log "starting the Ray head at $ADDRESS (dashboard on $RAY_DASHBOARD_HOST:$RAY_DASHBOARD_PORT)"
    "$RAY_BIN" start --head --node-ip-address "$HEAD_ADDR" --port "$RAY_PORT" \
      --dashboard-host "$RAY_DASHBOARD_HOST" --dashboard-port "$RAY_DASHBOARD_PORT" "${start_args[@]}"
  fi
else
  if status=$(port_open && "$RAY_BIN" status --address "$ADDRESS" 2>/dev/null); then
    if grep -q "$RANK_RESOURCE" <<<"$status"; then
      log "already in the cluster at $ADDRESS; nothing to do"
      exit 0
    fi
  else
    log "waiting up to ${JOIN_TIMEOUT_S}s for the head at $ADDRESS"
    wait_for cluster_up 2 "no Ray head at $ADDRESS after ${JOIN_TIMEOUT_S}s (is rank 0 up? is port $RAY_PORT open between nodes?)"
  fi
  log "joining the cluster at $ADDRESS (NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-unset})"
  "$RAY_BIN" start --address "$ADDRESS" "${start_args[@]}"
  # The head's view lags the node's start by a few seconds; return once the cluster sees us.
  wait_for node_joined 1 "started, but the head does not list this node after ${JOIN_TIMEOUT_S}s"
fi

log "up. Dashboard: ssh -L $RAY_DASHBOARD_PORT:localhost:$RAY_DASHBOARD_PORT <pod ssh address>, then http://localhost:$RAY_DASHBOARD_PORT"
log "run a study: python -m orchestrator run matrix.yaml --address $ADDRESS --storage s3://BUCKET/studies"
