# shellcheck shell=bash
# Shell helpers shared by the .ci scripts; sourced, never run.

# port_in_use PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# alive PID: true while the process exists (and is not a zombie).
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	[ -r "/proc/$1/stat" ] || return 0
	local stat
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	stat="${stat##*) }"
	[[ "$stat" != Z* && "$stat" != X* ]]
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
