#!/usr/bin/env bash
# Starts a throwaway Redis server for the redis tracker driver's tests, and stops it.
#
#	bash .ci/redis.sh [start] [ENVFILE]   start a server; print (or write to ENVFILE) the export
#	                                      lines that point the tests at it
#	bash .ci/redis.sh stop [DIR]          stop the server whose directory is DIR (default
#	                                      $CHIHAYA_REDIS_DIR) and remove the directory
#
# start installs redis-server with apt-get when it is missing (as root, or through sudo -n),
# and runs it daemonized on 127.0.0.1 and the first free port from 36379 up, without
# persistence (--save '' --appendonly no), with its pid file, log and working directory in a
# fresh mktemp -d directory. It prints:
#
#	export CHIHAYA_REDIS_ADDR='127.0.0.1:<port>'
#	export CHIHAYA_REDIS_DIR='<directory>'
#
# so that `eval "$(bash .ci/redis.sh)"` or `bash .ci/redis.sh FILE && source FILE` sets up a
# shell. Every other message goes to stderr. Each start makes a new server; stop each by its
# directory. No service is enabled and no system configuration is touched.
set -euo pipefail

export PATH="/usr/sbin:/sbin:${PATH}"

readonly script_name=redis.sh
readonly first_port=36379
readonly last_port=36478
readonly deadline_seconds=30
readonly marker=".chihaya-redis"

# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_packages() {
	if command -v redis-server >/dev/null 2>&1; then
		return 0
	fi
	apt_install "$script_name" redis-server || die "apt-get install redis-server"
	command -v redis-server >/dev/null 2>&1 || die "no redis-server after apt-get install"
}

start() {
	local envfile="${1:-}"
	install_packages

	new_start_dir chihaya-redis "$marker"
	local dir="$start_dir" port started=""
	for ((port = first_port; port <= last_port; port++)); do
		port_in_use "$port" && continue
		if redis_launch "$dir" "$port" "$deadline_seconds"; then
			started=1
			break
		fi
		log "port $port taken, trying the next"
	done
	[ -n "$started" ] || die "no free port in ${first_port}-${last_port}"
	# The daemon writes its pid file just after it starts listening.
	local deadline=$((SECONDS + deadline_seconds)) pid
	while [ ! -s "$dir/redis.pid" ] && ((SECONDS < deadline)); do
		sleep 0.1
	done
	pid="$(cat "$dir/redis.pid" 2>/dev/null || true)"

	start_dir=""
	write_env "$envfile" CHIHAYA_REDIS_ADDR "127.0.0.1:$port" CHIHAYA_REDIS_DIR "$dir"
	log "$(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$port (pid $pid, dir $dir); stop with: bash .ci/redis.sh stop $dir"
}

# stop [DIR]: stops the server of DIR and removes DIR.
stop() {
	local dir="${1:-${CHIHAYA_REDIS_DIR:-}}"
	stop_guard "$dir" CHIHAYA_REDIS_DIR "$marker" || return 0
	local pid=""
	[ -r "$dir/redis.pid" ] && pid="$(cat "$dir/redis.pid")"
	stop_pids redis-server "$deadline_seconds" "$pid"
	rm -rf "$dir"
	log "stopped${pid:+ pid $pid}, removed $dir"
}

dispatch "$@"
