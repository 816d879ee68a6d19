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

readonly script_name=redis-cluster.sh
readonly nodes=3
readonly first_port=37001
readonly last_port=37200
readonly bus_offset=10000
readonly deadline_seconds=30
readonly marker=".chihaya-redis-cluster"

# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_packages() {
	if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
		return 0
	fi
	apt_install "$script_name" redis-server redis-tools || die "apt-get install redis-server redis-tools"
	command -v redis-server >/dev/null 2>&1 || die "no redis-server after apt-get install"
	command -v redis-cli >/dev/null 2>&1 || die "no redis-cli after apt-get install"
}

# cli PORT ARG...: runs redis-cli against the node on PORT.
cli() {
	local port="$1"
	shift
	redis-cli -h 127.0.0.1 -p "$port" "$@"
}

start() {
	local envfile="${1:-}"
	install_packages

	new_start_dir chihaya-redis-cluster "$marker"
	local dir="$start_dir" ports=() port=$first_port i
	for ((i = 1; i <= nodes; i++)); do
		local nodedir="$dir/node-$i" started=""
		mkdir "$nodedir"
		for (( ; port <= last_port; port++)); do
			port_in_use "$port" && continue
			port_in_use "$((port + bus_offset))" && continue
			# A node that lost its port starts again from scratch on the next one.
			rm -f "$nodedir/nodes.conf"
			if redis_launch "$nodedir" "$port" "$deadline_seconds" --cluster-enabled yes \
				--cluster-config-file nodes.conf --cluster-node-timeout 5000; then
				started=1
				break
			fi
			log "port $port (or its bus port) taken, trying the next"
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
	local joined
	joined="$(
		IFS=,
		echo "${addrs[*]}"
	)"
	write_env "$envfile" CHIHAYA_REDIS_CLUSTER_ADDRS "$joined" CHIHAYA_REDIS_CLUSTER_DIR "$dir"
	log "$(redis-server --version | cut -d' ' -f1-3) cluster of $nodes masters on $joined (dir $dir); stop with: bash .ci/redis-cluster.sh stop $dir"
}

# stop [DIR]: stops every node of DIR and removes DIR.
stop() {
	local dir="${1:-${CHIHAYA_REDIS_CLUSTER_DIR:-}}"
	stop_guard "$dir" CHIHAYA_REDIS_CLUSTER_DIR "$marker" || return 0
	local pids=() pidfile pid
	for pidfile in "$dir"/node-*/redis.pid; do
		[ -r "$pidfile" ] || continue
		pid="$(cat "$pidfile")"
		if alive "$pid"; then
			pids+=("$pid")
		fi
	done
	stop_pids redis-server "$deadline_seconds" "${pids[@]}"
	rm -rf "$dir"
	log "stopped${pids[*]:+ pids ${pids[*]}}, removed $dir"
}

dispatch "$@"
