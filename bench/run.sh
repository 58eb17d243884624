#!/usr/bin/env bash
# Builds popproxy and popbench into a temporary folder and runs the benchmark,
# passing every argument on to popbench:
#
#   bench/run.sh                 full run (200 MB mailbox)
#   bench/run.sh -size 20        quick run
#   bench/run.sh -tests idle     one measurement (see popbench -h)
#   bench/run.sh -relay          add two bare TCP relays as reference targets:
#                                tcp-relay (Go, a goroutine per direction) and
#                                epoll-relay (one thread on raw epoll)
#   bench/run.sh -nginx=false    leave out nginx's mail proxy, measured by
#                                default as a peer in retr, noop and sessions
#                                (installs nginx-light and libnginx-mod-mail
#                                if missing)
#
# retr fetches the mailbox with an ordinary client and with one that re-arms
# TCP_QUICKACK after every read. nginx stalls about 40 ms per message on the
# ordinary one (Nagle against delayed ACKs), so it fetches only the first
# 64 MB with it; the notes under the table say so.
#   bench/run.sh -proxy BIN      measure BIN instead of the freshly built proxy
#
# Variants, run only when named, each in a table of its own:
#
#   bench/run.sh -tests tls-retr,tls-handshakes,tls-idle
#                                implicit TLS: RETR through popproxy, stunnel4
#                                and Dovecot's TLS port; full-handshake
#                                sessions/s against Dovecot's TLS (ECDSA P-256
#                                and RSA-2048) and with resumption; RSS per
#                                idle TLS session (installs stunnel4 if missing)
#   bench/run.sh -tests tls-idle-10k
#                                proxy RSS and descriptors with 10,000 idle TLS
#                                sessions (-idle-10k) to an in-process POP3
#                                server (internal/maildrop), and the
#                                RLIMIT_NOFILE they need
#   bench/run.sh -tests audit-retr
#                                RETR with the audit trail off and to a file
#   bench/run.sh -tests limits-retr
#                                RETR with every limit off and with the defaults
#   bench/run.sh -tests shared-sessions
#                                sessions/s (-clients, 64) with the limits in a
#                                private redis-server (limits.shared) against
#                                the same limits kept by the instance
#   bench/run.sh -tests soak     32 TLS clients fetch, check and delete mail through
#                                popproxy and from Dovecot while Dovecot is restarted
#                                or paused every 15 s: work kept, first login after
#                                an outage, integrity (-soak-time 6m)
#
# The table is printed and saved with the JSON in bench/results/ (git-ignored);
# a -json argument chooses another JSON file.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The tests named, and whether nginx is measured.
tests=retr,noop,sessions nginx=true prev=
for arg in "$@"; do
	case $prev in -tests | --tests) tests=$arg ;; esac
	case $arg in
	-tests=* | --tests=*) tests=${arg#*=} ;;
	-nginx | --nginx) nginx=true ;;
	-nginx=* | --nginx=*)
		case ${arg#*=} in 0 | f | F | false | FALSE | False) nginx=false ;; *) nginx=true ;; esac
		;;
	esac
	prev=$arg
done

# Idle sessions hold descriptors in popbench and in popproxy, which inherits
# the limit: idle's 2,000 about 2,000 in popbench and 4,000 in popproxy;
# tls-idle-10k's 10,000 about 20,000 in each (popbench holds maildrop's end
# too), which popbench checks against -idle-10k. Raising the hard limit
# takes CAP_SYS_RESOURCE; without it, use the hard limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
	echo "run.sh: open-file limit $(ulimit -n) is too low for the idle-session test" >&2
	exit 1
fi

# tls-retr compares popproxy with stunnel4 (Debian's package).
if [[ " $* " == *tls-retr* ]] && ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; then
	apt-get install -y stunnel4
fi

# retr, noop and sessions (the default tests) compare popproxy with nginx's
# mail proxy (Debian's nginx-light and its dynamic mail module) unless
# -nginx=false.
if [ "$nginx" = true ] && [[ ",$tests," =~ ,(retr|noop|sessions), ]] &&
	{ ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_mail_module.so ]; }; then
	apt-get install -y nginx-light libnginx-mod-mail
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/popproxy" ./cmd/popproxy
go build -o "$tmp/popbench" ./bench/popbench

mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
table=bench/results/$stamp.txt
json=bench/results/$stamp.json
for arg in "$@"; do
	case $arg in -json | --json | -json=* | --json=*) json="(the -json argument)" ;; esac
done
args=(-proxy "$tmp/popproxy")
if [ "$json" != "(the -json argument)" ]; then
	args+=(-json "$json")
fi

"$tmp/popbench" "${args[@]}" "$@" | tee "$table"
echo "results: table $table, JSON $json"
