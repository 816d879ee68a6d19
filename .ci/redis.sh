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

readonly first_port=36379
readonly last_port=36478
readonly deadline_seconds=30
readonly marker=".chihaya-redis"

log() { printf 'redis.sh: %s\n' "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}

usage() {
	sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^#\t\{0,1\}//' >&2
	exit 2
}

install_packages() {
	if command -v redis-server >/dev/null 2>&1; then
		return 0
	fi
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null || die "need root (or sudo) to apt-get install redis-server"
		sudo=(sudo -n)
	fi
	local aptlog
	aptlog="$(mktemp "${TMPDIR:-/tmp}/chihaya-redis-apt.XXXXXX")"
	log "installing redis-server (log only on failure)"
	if ! { "${sudo[@]}" apt-get update &&
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			redis-server; } >"$aptlog" 2>&1 </dev/null; then
		cat "$aptlog" >&2
		rm -f "$aptlog"
		die "apt-get install redis-server"
	fi
	rm -f "$aptlog"
	command -v redis-server >/dev/null 2>&1 || die "no redis-server after apt-get install"
}

# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ping PORT: true when the server on PORT answers PING with PONG.
ping() {
	if command -v redis-cli >/dev/null 2>&1; then
		[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
		return
	fi
	local reply
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'PING\r\n' >&3
	IFS= read -r -t 2 reply <&3 || true
	exec 3<&- 3>&-
	[[ "$reply" == +PONG* ]]
}

start() {
	local envfile="${1:-}"
	install_packages

	local dir
	dir="$(mktemp -d "${TMPDIR:-/tmp}/chihaya-redis.XXXXXX")"
	touch "$dir/$marker"
	start_dir="$dir"
	trap 'if [ -n "${start_dir:-}" ]; then stop "$start_dir" 2>/dev/null || true; fi' EXIT

	local port started="" pid=""
	for ((port = first_port; port <= last_port; port++)); do
		port_in_use "$port" && continue
		rm -f "$dir/redis.pid"
		if ! redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
			--dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
			>>"$dir/redis-server.out" 2>&1 </dev/null; then
			cat "$dir/redis-server.out" "$dir/redis.log" >&2 2>/dev/null || true
			die "redis-server failed to start"
		fi
		echo "$port" >"$dir/port"
		local deadline=$((SECONDS + deadline_seconds))
		while ((SECONDS < deadline)); do
			[ -s "$dir/redis.pid" ] && pid="$(cat "$dir/redis.pid")"
			if ping "$port"; then
				started=1
				break
			fi
			if [ -n "$pid" ] && ! alive "$pid"; then
				break
			fi
			sleep 0.1
		done
		[ -n "$started" ] && break
		if grep -qi "address already in use" "$dir/redis.log" 2>/dev/null; then
			log "port $port taken, trying the next"
			continue
		fi
		cat "$dir/redis.log" >&2 2>/dev/null || true
		die "redis-server did not answer PING on port $port within ${deadline_seconds}s"
	done
	[ -n "$started" ] || die "no free port in ${first_port}-${last_port}"
	# The daemon writes its pid file just after it starts listening.
	local deadline=$((SECONDS + deadline_seconds))
	while [ ! -s "$dir/redis.pid" ] && ((SECONDS < deadline)); do
		sleep 0.1
	done
	pid="$(cat "$dir/redis.pid" 2>/dev/null || true)"

	start_dir=""
	local lines
	lines="$(printf "export CHIHAYA_REDIS_ADDR='127.0.0.1:%s'\nexport CHIHAYA_REDIS_DIR='%s'\n" "$port" "$dir")"
	if [ -n "$envfile" ]; then
		printf '%s\n' "$lines" >"$envfile"
	else
		printf '%s\n' "$lines"
	fi
	log "$(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$port (pid $pid, dir $dir); stop with: bash .ci/redis.sh stop $dir"
}

# stop [DIR]: stops the server of DIR and removes DIR.
stop() {
	local dir="${1:-${CHIHAYA_REDIS_DIR:-}}"
	[ -n "$dir" ] || die "stop: no directory given and CHIHAYA_REDIS_DIR is unset"
	if [ ! -d "$dir" ]; then
		log "stop: $dir does not exist, nothing to do"
		return 0
	fi
	[ -e "$dir/$marker" ] || die "stop: $dir was not made by this script, not touching it"

	local pid=""
	[ -r "$dir/redis.pid" ] && pid="$(cat "$dir/redis.pid")"
	if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + deadline_seconds))
		while alive "$pid" && ((SECONDS < deadline)); do
			sleep 0.1
		done
		if alive "$pid"; then
			log "stop: redis-server (pid $pid) still running after ${deadline_seconds}s, killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -rf "$dir"
	log "stopped${pid:+ pid $pid}, removed $dir"
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
