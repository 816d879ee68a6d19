#!/usr/bin/env bash
# Starts a throwaway Redis Cluster for the redis tracker driver's tests, and stops it.
#
#	bash .ci/redis-cluster.sh [start] [ENVFILE]   start a cluster; print (or write to ENVFILE)
#	                                              the export lines that point the tests at it
#	bash .ci/redis-cluster.sh stop [DIR]          stop the cluster whose directory is DIR
#	                                              (default $CHIHAYA_REDIS_CLUSTER_DIR), remove DIR
#
# start installs redis-server and redis-tools (redis-cli) with apt-get when they are missing (as
# root, or through sudo -n), and runs three daemonized redis-server nodes with
# `cluster-enabled yes` on 127.0.0.1, on the first free ports from 37001 up (each node's
# cluster bus, port + 10000, must be free too), without persistence, each with its pid file,
# log, nodes.conf and working directory under one fresh mktemp -d directory. It joins them with
# `redis-cli --cluster create ... --cluster-replicas 0` (three masters, no replicas, 16384 slots
# split between them) and waits until every node reports cluster_state:ok. It prints:
#
#	export CHIHAYA_REDIS_CLUSTER_ADDRS='127.0.0.1:<port>,127.0.0.1:<port>,127.0.0.1:<port>'
#	export CHIHAYA_REDIS_CLUSTER_DIR='<directory>'
#
# so that `eval "$(bash .ci/redis-cluster.sh)"` or `bash .ci/redis-cluster.sh FILE && source
# FILE` sets up a shell. Every other message goes to stderr. The tests that need the cluster
# (tracker/redis/cluster_test.go, cmd/chihaya/redis_e2e_test.go) skip without
# CHIHAYA_REDIS_CLUSTER_ADDRS, unless CHIHAYA_REQUIRE_REDIS_CLUSTER=1 (which .ci/run sets) makes
# that a failure. Each start makes a new cluster; stop each by its directory. No service is
# enabled and no system configuration is touched.
set -euo pipefail

export PATH="/usr/sbin:/sbin:${PATH}"

readonly nodes=3
readonly first_port=37001
readonly last_port=37200
readonly bus_offset=10000
readonly deadline_seconds=30
readonly marker=".chihaya-redis-cluster"

log() { printf 'redis-cluster.sh: %s\n' "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}

usage() {
	sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}\t\{0,1\}//' >&2
	exit 2
}

# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_packages() {
	if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
		return 0
	fi
	apt_install redis-cluster.sh redis-server redis-tools || die "apt-get install redis-server redis-tools"
	command -v redis-server >/dev/null 2>&1 || die "no redis-server after apt-get install"
	command -v redis-cli >/dev/null 2>&1 || die "no redis-cli after apt-get install"
}

# cli PORT ARG...: runs redis-cli against the node on PORT.
cli() {
	local port="$1"
	shift
	redis-cli -h 127.0.0.1 -p "$port" "$@"
}

# launch NODEDIR PORT: starts a cluster-enabled node on PORT and waits until it answers PING.
# Returns 1 when it lost its port to another process (the caller tries the next one), and dies
# on any other failure.
launch() {
	local nodedir="$1" port="$2" pid=""
	rm -f "$nodedir/redis.pid" "$nodedir/nodes.conf" "$nodedir/redis.log"
	if ! redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
		--cluster-config-file nodes.conf --cluster-node-timeout 5000 \
		--save '' --appendonly no --dir "$nodedir" --daemonize yes \
		--pidfile "$nodedir/redis.pid" --logfile "$nodedir/redis.log" \
		>>"$nodedir/redis-server.out" 2>&1 </dev/null; then
		cat "$nodedir/redis-server.out" "$nodedir/redis.log" >&2 2>/dev/null || true
		die "redis-server failed to start on port $port"
	fi
	local deadline=$((SECONDS + deadline_seconds))
	while ((SECONDS < deadline)); do
		[ -s "$nodedir/redis.pid" ] && pid="$(cat "$nodedir/redis.pid")"
		if [ "$(cli "$port" ping 2>/dev/null)" = PONG ]; then
			echo "$port" >"$nodedir/port"
			return 0
		fi
		if [ -n "$pid" ] && ! alive "$pid"; then
			break
		fi
		sleep 0.1
	done
	if grep -qi "address already in use" "$nodedir/redis.log" 2>/dev/null; then
		log "port $port (or its bus port) taken, trying the next"
		return 1
	fi
	cat "$nodedir/redis.log" >&2 2>/dev/null || true
	die "redis-server did not answer PING on port $port within ${deadline_seconds}s"
}

start() {
	local envfile="${1:-}"
	install_packages

	local dir
	dir="$(mktemp -d "${TMPDIR:-/tmp}/chihaya-redis-cluster.XXXXXX")"
	touch "$dir/$marker"
	# A start that fails part way stops what it started and leaves no directory behind.
	start_dir="$dir"
	trap 'if [ -n "${start_dir:-}" ]; then stop "$start_dir" 2>/dev/null || true; fi' EXIT

	local ports=() port=$first_port i
	for ((i = 1; i <= nodes; i++)); do
		local nodedir="$dir/node-$i" started=""
		mkdir "$nodedir"
		for (( ; port <= last_port; port++)); do
			port_in_use "$port" && continue
			port_in_use "$((port + bus_offset))" && continue
			if launch "$nodedir" "$port"; then
				started=1
				break
			fi
		done
		[ -n "$started" ] || die "no free port for node $i in ${first_port}-${last_port}"
		ports+=("$port")
		port=$((port + 1))
	done

	local addrs=() p
	for p in "${ports[@]}"; do
		addrs+=("127.0.0.1:$p")
	done
	if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
		>"$dir/cluster-create.log" 2>&1 </dev/null; then
		cat "$dir/cluster-create.log" >&2
		die "redis-cli --cluster create ${addrs[*]}"
	fi

	# Every node must see the whole cluster before a client asks any of them for the slots.
	local deadline=$((SECONDS + deadline_seconds)) ok="" info
	while ((SECONDS < deadline)); do
		ok=1
		for p in "${ports[@]}"; do
			info="$(cli "$p" cluster info 2>/dev/null | tr -d '\r')" || info=""
			if ! grep -qx 'cluster_state:ok' <<<"$info" ||
				! grep -qx 'cluster_slots_ok:16384' <<<"$info" ||
				! grep -qx "cluster_known_nodes:$nodes" <<<"$info"; then
				ok=""
				break
			fi
		done
		[ -n "$ok" ] && break
		sleep 0.2
	done
	if [ -z "$ok" ]; then
		cat "$dir/cluster-create.log" >&2
		for p in "${ports[@]}"; do
			log "node 127.0.0.1:$p: $(cli "$p" cluster info 2>&1 | tr -d '\r' | grep -E 'cluster_(state|slots_ok|known_nodes)' | tr '\n' ' ')"
		done
		die "the cluster did not reach cluster_state:ok within ${deadline_seconds}s"
	fi

	start_dir=""
	local joined lines
	joined="$(
		IFS=,
		echo "${addrs[*]}"
	)"
	lines="$(printf "export CHIHAYA_REDIS_CLUSTER_ADDRS='%s'\nexport CHIHAYA_REDIS_CLUSTER_DIR='%s'\n" "$joined" "$dir")"
	if [ -n "$envfile" ]; then
		printf '%s\n' "$lines" >"$envfile"
	else
		printf '%s\n' "$lines"
	fi
	log "$(redis-server --version | cut -d' ' -f1-3) cluster of $nodes masters on $joined (dir $dir); stop with: bash .ci/redis-cluster.sh stop $dir"
}

# stop [DIR]: stops every node of DIR and removes DIR.
stop() {
	local dir="${1:-${CHIHAYA_REDIS_CLUSTER_DIR:-}}"
	[ -n "$dir" ] || die "stop: no directory given and CHIHAYA_REDIS_CLUSTER_DIR is unset"
	if [ ! -d "$dir" ]; then
		log "stop: $dir does not exist, nothing to do"
		return 0
	fi
	[ -e "$dir/$marker" ] || die "stop: $dir was not made by this script, not touching it"

	local pids=() pidfile pid
	for pidfile in "$dir"/node-*/redis.pid; do
		[ -r "$pidfile" ] || continue
		pid="$(cat "$pidfile")"
		if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
	done
	local deadline=$((SECONDS + deadline_seconds))
	for pid in "${pids[@]}"; do
		while alive "$pid" && ((SECONDS < deadline)); do
			sleep 0.1
		done
		if alive "$pid"; then
			log "stop: redis-server (pid $pid) still running after ${deadline_seconds}s, killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	rm -rf "$dir"
	log "stopped${pids[*]:+ pids ${pids[*]}}, removed $dir"
}

case "${1:-start}" in
stop)
	shift
	stop "${1:-}"
	;;
start)
	shift || true
	start "$@"
	;;
-h | --help | help) usage ;;
*) start "$@" ;;
esac
