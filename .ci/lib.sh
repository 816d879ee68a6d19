# shellcheck shell=bash
# Shell helpers shared by the .ci scripts; sourced, never run.
#
# The scripts run under `set -euo pipefail`, and these functions are written to work under it. A
# script sets script_name (its file name, for messages) and defines start and stop before it uses
# dispatch or new_start_dir. Locals here must not reuse the names of the scripts' readonly
# settings (marker, first_port, deadline_seconds, ...): `local` fails on a readonly name.

# log MESSAGE...: prints "SCRIPT: MESSAGE" to stderr, SCRIPT being $script_name.
log() { printf '%s: %s\n' "${script_name:-${0##*/}}" "$*" >&2; }

# die MESSAGE...: logs "FAIL: MESSAGE" and exits 1.
die() {
	log "FAIL: $*"
	exit 1
}

# usage: prints the synopsis at the top of the script's header comment (from its second line up
# to the second blank comment line: the summary and the command lines) to stderr, and exits 2.
usage() {
	awk 'NR == 1 { next }
		!/^#/ || ($0 == "#" && ++blank == 2) { exit }
		{ sub(/^#( |\t)?/, ""); print }' "$0" >&2
	exit 2
}

# dispatch [start] [ARG...] | stop [DIR] | help: runs the script's command line: start ARG...
# (also when the first word is none of these), stop DIR, or usage for -h, --help and help.
dispatch() {
	case "${1:-start}" in
	stop) stop "${2:-}" ;;
	start)
		shift || true
		start "$@"
		;;
	-h | --help | help) usage ;;
	*) start "$@" ;;
	esac
}

# port_in_use PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# alive PID: true while PID (a positive number; anything else is not alive) is a process that
# exists and is not a zombie.
alive() {
	[[ "${1:-}" =~ ^[1-9][0-9]*$ ]] || return 1
	kill -0 "$1" 2>/dev/null || return 1
	[ -r "/proc/$1/stat" ] || return 0
	local stat
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	stat="${stat##*) }"
	[[ "$stat" != Z* && "$stat" != X* ]]
}

# stop_pids WHAT SECONDS PID...: sends TERM to each PID that is alive (the others are left
# alone), waits up to SECONDS in all for them to exit, and kills with KILL, saying so, those
# still running then. WHAT names the program in that message.
stop_pids() {
	local what="$1" seconds="$2" pid signalled=()
	shift 2
	for pid in "$@"; do
		if alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			signalled+=("$pid")
		fi
	done
	local deadline=$((SECONDS + seconds))
	for pid in "${signalled[@]}"; do
		while alive "$pid" && ((SECONDS < deadline)); do
			sleep 0.1
		done
		if alive "$pid"; then
			log "stop: $what (pid $pid) still running after ${seconds}s, killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
}

# new_start_dir NAME MARKER: makes a fresh directory ${TMPDIR:-/tmp}/NAME.XXXXXX holding the
# file MARKER (stop_guard looks for it) and sets start_dir to it. Until start_dir is cleared, an
# EXIT trap runs `stop "$start_dir"`, so that a start that fails part way leaves nothing running
# and no directory behind: clear it once the start has succeeded. Call it directly, not in $(...).
new_start_dir() {
	start_dir="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
	touch "$start_dir/$2"
	trap 'if [ -n "${start_dir:-}" ]; then stop "$start_dir" 2>/dev/null || true; fi' EXIT
}

# stop_guard DIR VAR MARKER: the checks before stop touches DIR (which defaults to $VAR). Dies
# when DIR is empty or lacks the file MARKER that new_start_dir made in it; says there is nothing
# to do and returns 1 when DIR does not exist.
stop_guard() {
	local dir="$1" var="$2" mark="$3"
	[ -n "$dir" ] || die "stop: no directory given and $var is unset"
	if [ ! -d "$dir" ]; then
		log "stop: $dir does not exist, nothing to do"
		return 1
	fi
	[ -e "$dir/$mark" ] || die "stop: $dir was not made by this script, not touching it"
}

# write_env ENVFILE NAME VALUE [NAME VALUE]...: writes the line export NAME='VALUE' of each pair
# (the lines start prints) to ENVFILE, or to stdout when ENVFILE is empty.
write_env() {
	local envfile="$1" lines="" q="'"
	shift
	while (($# >= 2)); do
		lines+="export $1='${2//$q/$q\\$q$q}'"$'\n'
		shift 2
	done
	if [ -n "$envfile" ]; then
		printf '%s' "$lines" >"$envfile"
	else
		printf '%s' "$lines"
	fi
}

# apt_install NAME PACKAGE...: apt-get installs the packages (as root, or through sudo -n),
# quietly: the log is printed only on failure. NAME names the caller in messages. Returns
# non-zero on failure.
apt_install() {
	local name="$1"
	shift
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		if ! command -v sudo >/dev/null; then
			printf '%s: need root (or sudo) to apt-get install %s\n' "$name" "$*" >&2
			return 1
		fi
		sudo=(sudo -n)
	fi
	local aptlog
	aptlog="$(mktemp "${TMPDIR:-/tmp}/chihaya-apt.XXXXXX")"
	printf '%s: installing %s (log only on failure)\n' "$name" "$*" >&2
	if ! { "${sudo[@]}" apt-get update &&
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			"$@"; } >"$aptlog" 2>&1 </dev/null; then
		cat "$aptlog" >&2
		rm -f "$aptlog"
		printf '%s: apt-get install %s failed\n' "$name" "$*" >&2
		return 1
	fi
	rm -f "$aptlog"
}

# redis_ping PORT: true when the Redis server on 127.0.0.1:PORT answers PING with PONG (asked
# with redis-cli, or by hand where there is none).
redis_ping() {
	if command -v redis-cli >/dev/null 2>&1; then
		[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
		return
	fi
	local reply=""
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'PING\r\n' >&3
	IFS= read -r -t 2 reply <&3 || true
	exec 3<&- 3>&-
	[[ "$reply" == +PONG* ]]
}

# redis_launch DIR PORT SECONDS [OPTION...]: runs a daemonized redis-server with OPTION... on
# 127.0.0.1:PORT, without persistence (--save '' --appendonly no), with its working directory,
# pid file (redis.pid) and log (redis.log) in DIR, waits up to SECONDS until it answers PING,
# and then writes PORT to DIR/port. Returns 1 when it lost its port to another process (the
# caller tries the next one), and dies on any other failure.
redis_launch() {
	local dir="$1" port="$2" seconds="$3" pid=""
	shift 3
	rm -f "$dir/redis.pid" "$dir/redis.log"
	if ! redis-server --bind 127.0.0.1 --port "$port" "$@" --save '' --appendonly no \
		--dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
		>>"$dir/redis-server.out" 2>&1 </dev/null; then
		cat "$dir/redis-server.out" "$dir/redis.log" >&2 2>/dev/null || true
		die "redis-server failed to start on port $port"
	fi
	local deadline=$((SECONDS + seconds))
	while ((SECONDS < deadline)); do
		[ -s "$dir/redis.pid" ] && pid="$(cat "$dir/redis.pid")"
		if redis_ping "$port"; then
			echo "$port" >"$dir/port"
			return 0
		fi
		if [ -n "$pid" ] && ! alive "$pid"; then
			break
		fi
		sleep 0.1
	done
	if grep -qi "address already in use" "$dir/redis.log" 2>/dev/null; then
		return 1
	fi
	cat "$dir/redis.log" >&2 2>/dev/null || true
	die "redis-server did not answer PING on port $port within ${seconds}s"
}
