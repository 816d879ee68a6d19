#!/usr/bin/env bash
# Starts a throwaway MariaDB server for the backend/gazelle integration tests, and stops it.
#
#	bash .ci/mariadb.sh [start] [ENVFILE]   start a server; print (or write to ENVFILE) the
#	                                        export lines that point the tests at it
#	bash .ci/mariadb.sh stop [DIR]          stop the server whose directory is DIR (default
#	                                        $CHIHAYA_MYSQL_DIR) and remove the directory
#	bash .ci/mariadb.sh stop-keep DIR       stop that server but keep its directory and data
#	bash .ci/mariadb.sh start-existing DIR  start it again on its data, address and port
#
# start installs mariadb-server and mariadb-client with apt-get when they are missing (as root,
# or through sudo -n), initialises a fresh data directory under mktemp -d, and runs mariadbd in
# the background on 127.0.0.1 and the first free port from 33306 up, with its socket, pid file
# and logs in that directory. It creates the user chihaya (random password, all privileges: the
# tests create and drop their own databases) and prints:
#
#	export CHIHAYA_MYSQL_DSN='chihaya:<password>@tcp(127.0.0.1:<port>)/'
#	export CHIHAYA_MYSQL_DIR='<directory>'
#
# so that `eval "$(bash .ci/mariadb.sh)"` or `bash .ci/mariadb.sh FILE && source FILE` sets up a
# shell. Every other message goes to stderr. Each start makes a new server, so running it twice
# gives two independent servers; stop each by its directory. Nothing else is left behind: no
# service is enabled and no system configuration is touched.
set -euo pipefail

export PATH="/usr/sbin:/sbin:${PATH}"

readonly script_name=mariadb.sh
readonly first_port=33306
readonly last_port=33405
readonly deadline_seconds=60
readonly marker=".chihaya-mariadb"

# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# first_of NAME...: prints the first NAME that is a command.
first_of() {
	local name
	for name in "$@"; do
		if command -v "$name" >/dev/null 2>&1; then
			command -v "$name"
			return 0
		fi
	done
	return 1
}

install_packages() {
	if first_of mariadbd mysqld >/dev/null && first_of mariadb-install-db mysql_install_db >/dev/null &&
		first_of mariadb mysql >/dev/null && first_of mariadb-admin mysqladmin >/dev/null; then
		return 0
	fi
	apt_install "$script_name" mariadb-server mariadb-client ||
		die "apt-get install mariadb-server mariadb-client"
	first_of mariadbd mysqld >/dev/null || die "no mariadbd or mysqld after apt-get install"
}

# launch DIR PORT: runs mariadbd in the background on DIR's data and 127.0.0.1:PORT, with the
# options saved in DIR/user-opt, records its pid in DIR/pid, and waits until it answers a ping.
# Fails when it exits or does not answer within deadline_seconds (and then leaves it running
# for the caller to kill).
launch() {
	local dir="$1" port="$2" mariadbd admin
	mariadbd="$(first_of mariadbd mysqld)"
	admin="$(first_of mariadb-admin mysqladmin)"
	local user_opt=()
	if [ -s "$dir/user-opt" ]; then
		mapfile -t user_opt <"$dir/user-opt"
	fi
	local sock="$dir/mysqld.sock" pid
	# --no-defaults keeps /etc/mysql out (it would move the socket and the bind address).
	"$mariadbd" --no-defaults "${user_opt[@]}" --datadir="$dir/data" --tmpdir="$dir/tmp" \
		--socket="$sock" --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" \
		--bind-address=127.0.0.1 --port="$port" --skip-networking=0 --skip-name-resolve \
		--skip-log-bin --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
		--innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=2 \
		>>"$dir/mariadbd.out" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$dir/pid"
	echo "$port" >"$dir/port"

	local deadline=$((SECONDS + deadline_seconds))
	while alive "$pid" && ((SECONDS < deadline)); do
		if "$admin" --no-defaults --socket="$sock" -uroot --connect-timeout=2 ping \
			>/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	return 1
}

start() {
	local envfile="${1:-}"
	install_packages

	local install_db client
	install_db="$(first_of mariadb-install-db mysql_install_db)"
	client="$(first_of mariadb mysql)"

	new_start_dir chihaya-mariadb "$marker"
	local dir="$start_dir"
	mkdir "$dir/data" "$dir/tmp"

	# mariadbd refuses to run as root unless told to: run it as mysql (made by the package)
	# when we are root and mysql can reach the directory (a TMPDIR under /root may not let it),
	# as root failing that, and as ourselves when we are not root.
	local user_opt=()
	if [ "$(id -u)" -eq 0 ]; then
		user_opt=(--user=root)
		if id mysql >/dev/null 2>&1; then
			chown -R mysql:mysql "$dir"
			if command -v runuser >/dev/null && runuser -u mysql -- test -w "$dir/data"; then
				user_opt=(--user=mysql)
			else
				chown -R root:root "$dir"
			fi
		fi
	fi

	# root@localhost gets an empty password instead of unix_socket authentication, so that this
	# script can log in over the socket whoever runs it. The server only listens on 127.0.0.1
	# and on a socket in a private directory, and lives as long as the test run.
	if ! "$install_db" --no-defaults "${user_opt[@]}" --datadir="$dir/data" \
		--auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
		>"$dir/install-db.log" 2>&1 </dev/null; then
		cat "$dir/install-db.log" >&2
		die "$install_db --datadir=$dir/data"
	fi

	# start-existing runs the server again with the same options.
	: >"$dir/user-opt"
	if ((${#user_opt[@]})); then
		printf '%s\n' "${user_opt[@]}" >"$dir/user-opt"
	fi

	local sock="$dir/mysqld.sock" port pid="" started=""
	for ((port = first_port; port <= last_port; port++)); do
		port_in_use "$port" && continue
		if launch "$dir" "$port"; then
			started=1
		fi
		pid="$(cat "$dir/pid")"
		[ -n "$started" ] && break

		if alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
			cat "$dir/error.log" >&2 2>/dev/null || true
			die "mariadbd did not answer ping within ${deadline_seconds}s"
		fi
		wait "$pid" 2>/dev/null || true
		# Lost a race for the port to another process: try the next one.
		if grep -qi "address already in use" "$dir/error.log" 2>/dev/null; then
			log "port $port taken, trying the next"
			continue
		fi
		cat "$dir/error.log" >&2 2>/dev/null || true
		die "mariadbd exited at start"
	done
	[ -n "$started" ] || die "no free port in ${first_port}-${last_port}"

	local password
	password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
	"$client" --no-defaults --socket="$sock" -uroot <<-SQL || { cat "$dir/error.log" >&2; die "create user chihaya"; }
		CREATE USER 'chihaya'@'127.0.0.1' IDENTIFIED BY '$password';
		CREATE USER 'chihaya'@'localhost' IDENTIFIED BY '$password';
		GRANT ALL PRIVILEGES ON *.* TO 'chihaya'@'127.0.0.1';
		GRANT ALL PRIVILEGES ON *.* TO 'chihaya'@'localhost';
	SQL

	start_dir=""
	write_env "$envfile" CHIHAYA_MYSQL_DSN "chihaya:$password@tcp(127.0.0.1:$port)/" CHIHAYA_MYSQL_DIR "$dir"
	log "$("$client" --no-defaults --socket="$sock" -uroot -N -e 'SELECT VERSION()') on 127.0.0.1:$port (pid $pid, dir $dir); stop with: bash .ci/mariadb.sh stop $dir"
}

# start_existing DIR: starts the server of DIR (stopped by stop-keep) again on its data and its
# port, so that the DSN that start printed works again.
start_existing() {
	local dir="${1:-}"
	[ -n "$dir" ] || die "start-existing: no directory given"
	[ -e "$dir/$marker" ] || die "start-existing: $dir was not made by this script"
	[ -s "$dir/port" ] || die "start-existing: $dir has no port file"
	local pid="" port
	[ -r "$dir/pid" ] && pid="$(cat "$dir/pid")"
	if alive "$pid"; then
		die "start-existing: mariadbd (pid $pid) of $dir is still running"
	fi
	port="$(cat "$dir/port")"
	if ! launch "$dir" "$port"; then
		pid="$(cat "$dir/pid")"
		if alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
		tail -n 20 "$dir/error.log" >&2 2>/dev/null || true
		die "start-existing: mariadbd did not come back on port $port"
	fi
	log "started again on 127.0.0.1:$port (pid $(cat "$dir/pid"), dir $dir)"
}

# stop [DIR] [keep]: stops the server of DIR, and removes DIR unless keep is given.
stop() {
	local dir="${1:-${CHIHAYA_MYSQL_DIR:-}}" keep="${2:-}"
	stop_guard "$dir" CHIHAYA_MYSQL_DIR "$marker" || return 0
	local pid=""
	[ -r "$dir/pid" ] && pid="$(cat "$dir/pid")"
	stop_pids mariadbd "$deadline_seconds" "$pid"
	if [ -n "$keep" ]; then
		log "stopped${pid:+ pid $pid}, kept $dir"
		return 0
	fi
	rm -rf "$dir"
	log "stopped${pid:+ pid $pid}, removed $dir"
}

case "${1:-}" in
stop-keep)
	shift
	[ -n "${1:-}" ] || die "stop-keep: no directory given"
	stop "$1" keep
	;;
start-existing)
	shift
	start_existing "${1:-}"
	;;
*) dispatch "$@" ;;
esac
