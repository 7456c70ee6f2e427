#!/usr/bin/env bash
# Compare fastlb with HAProxy and nginx on this machine, in one run.
#
# Two test backends on loopback; each proxy gets one core's worth of workers
# (fastlb GOMAXPROCS=1, HAProxy nbthread 1, nginx worker_processes 1) and is
# pinned to CPU 0, while wrk and the backends share the other CPUs. Each
# target is measured ROUNDS times in turn with `wrk -t1 -cCONNS -dDURATION`;
# the table gives the median requests/s and p99 latency of the rounds.
# HAProxy and nginx add the headers fastlb adds to every request
# (X-Forwarded-For, -Proto, -Host, and X-Request-Id when there is none).
#
#   bench/wrk-compare.sh                 # 3 rounds of 10s, 64 connections
#   ROUNDS=5 DURATION=20s bench/wrk-compare.sh
#   ACCESS_LOG=1 bench/wrk-compare.sh    # also fastlb with its access log on
#   HTTPS=1 bench/wrk-compare.sh         # the proxies terminate TLS (ECDSA P-256, one certificate)
#   HTTPS=1 CLOSE=1 CONNS=16 bench/wrk-compare.sh   # a new TLS connection per request
#
# Needs wrk; HAProxy and nginx are measured when installed
# (apt-get install -y wrk haproxy nginx).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPUS=${LOAD_CPUS:-1-$(($(nproc) - 1))}
B1=19101 B2=19102 FASTLB=19200 HAPROXY=19201 NGINX=19202 FASTLB_LOG=19203

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)"; exit 1; }
make -s build
go build -o bin/fastlb-certs ./tlsconf/cmd/fastlb-certs
work=$(mktemp -d)
scheme=http
wrk_extra=()
[ -n "${CLOSE:-}" ] && wrk_extra=(-H "Connection: close")
if [ -n "${HTTPS:-}" ]; then
	scheme=https
	bin/fastlb-certs -dir "$work" -names localhost,127.0.0.1 >/dev/null
	cat "$work/cert.pem" "$work/key.pem" > "$work/combined.pem"
fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

taskset -c "$LOAD_CPUS" bin/testbackends -ports $B1,$B2 2>/dev/null & pids+=($!)
for port in $B1 $B2; do
	for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done

tls_json=
fastlb_port=$FASTLB
if [ "$scheme" = https ]; then
	tls_json=", \"tls\": {\"port\": $((FASTLB + 10)), \"bind\": \"127.0.0.1\", \"certificates\": [{\"cert_file\": \"$work/cert.pem\", \"key_file\": \"$work/key.pem\"}]}"
	fastlb_port=$((FASTLB + 10))
fi
cat > "$work/fastlb.json" <<JSON
{"bind": "127.0.0.1", "port": $FASTLB, "admin_port": 19299, "log_level": "error" $tls_json,
 "backends": ["http://127.0.0.1:$B1", "http://127.0.0.1:$B2"]}
JSON
GOMAXPROCS=1 taskset -c "$PROXY_CPU" bin/fastlb -config "$work/fastlb.json" & pids+=($!)
targets=("direct http://127.0.0.1:$B1/" "fastlb $scheme://127.0.0.1:$fastlb_port/")
if [ -n "${ACCESS_LOG:-}" ]; then
	cat > "$work/fastlb-log.json" <<JSON
{"bind": "127.0.0.1", "port": $FASTLB_LOG, "admin_port": 19298, "log_level": "error", "access_log": "$work/access.log",
 "backends": ["http://127.0.0.1:$B1", "http://127.0.0.1:$B2"]}
JSON
	GOMAXPROCS=1 taskset -c "$PROXY_CPU" bin/fastlb -config "$work/fastlb-log.json" & pids+=($!)
	targets+=("fastlb+log http://127.0.0.1:$FASTLB_LOG/")
fi

if command -v haproxy >/dev/null; then
	cat > "$work/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 10s
frontend fe
    bind 127.0.0.1:$HAPROXY $( [ "$scheme" = https ] && echo "ssl crt $work/combined.pem alpn http/1.1" )
    # the headers fastlb adds to every request
    option forwardfor
    unique-id-format %{+X}o%pid-%rt
    http-request set-header X-Forwarded-Proto $scheme
    http-request set-header X-Forwarded-Host %[req.hdr(host)] if { req.hdr(host) -m found }
    http-request del-header X-Forwarded-Host unless { req.hdr(host) -m found }
    http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
    default_backend be
backend be
    balance roundrobin
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
CFG
	taskset -c "$PROXY_CPU" haproxy -f "$work/haproxy.cfg" -db & pids+=($!)
	targets+=("haproxy $scheme://127.0.0.1:$HAPROXY/")
fi
if command -v nginx >/dev/null; then
	cat > "$work/nginx.conf" <<CFG
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 8000; }
http {
    access_log off;
    map \$http_x_request_id \$fastlb_request_id { "" \$request_id; default \$http_x_request_id; }
    client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
    upstream be { server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX $( [ "$scheme" = https ] && echo ssl );
        $( [ "$scheme" = https ] && echo "ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_session_cache shared:SSL:10m;" )
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Request-Id \$fastlb_request_id;
        }
    }
}
CFG
	taskset -c "$PROXY_CPU" nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" & pids+=($!)
	targets+=("nginx $scheme://127.0.0.1:$NGINX/")
fi

sleep 1
for t in "${targets[@]}"; do
	set -- $t
	curl -kfsS -o /dev/null "$2" || { echo "$1 does not answer at $2"; exit 1; }
done

echo "wrk -t1 -c$CONNS -d$DURATION ${wrk_extra[*]}, $scheme, $ROUNDS rounds, proxies on CPU $PROXY_CPU, load and backends on CPU $LOAD_CPUS"
for round in $(seq "$ROUNDS"); do
	for t in "${targets[@]}"; do
		set -- $t
		out=$(taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"$DURATION" "${wrk_extra[@]}" --latency "$2")
		rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
		p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
		errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
		echo "round $round $1 rps=$rps p99=$p99 $errs"
		echo "$1 $rps $p99" >> "$work/results"
	done
done

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f\n", v}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
printf "%-10s %12s %10s %10s\n" target "median rps" "p99 ms" "rps/haproxy"
hap=$(awk '$1=="haproxy" {print $2}' "$work/results" | median 2>/dev/null || echo)
for t in "${targets[@]}"; do
	set -- $t
	rps=$(awk -v n="$1" '$1==n {print $2}' "$work/results" | median)
	p99=$(awk -v n="$1" '$1==n {print $3}' "$work/results" | to_ms | median)
	ratio=-
	[ -n "$hap" ] && ratio=$(awk -v a="$rps" -v b="$hap" 'BEGIN {printf "%.2f", a/b}')
	printf "%-10s %12.0f %10.2f %10s\n" "$1" "$rps" "$p99" "$ratio"
done
