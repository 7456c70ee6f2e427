package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// certs makes a certificate for the HTTPS scenario once, shared by all proxies.
func (r *runner) certs() (cert, key, combined string, err error) {
	cert, key, combined = filepath.Join(r.work, "cert.pem"), filepath.Join(r.work, "key.pem"), filepath.Join(r.work, "combined.pem")
	if _, err := os.Stat(combined); err == nil {
		return cert, key, combined, nil
	}
	out, err := exec.Command(filepath.Join(r.bin, "fastlb-certs"), "-dir", r.work, "-names", "localhost,127.0.0.1").CombinedOutput()
	if err != nil {
		return "", "", "", fmt.Errorf("fastlb-certs: %v: %s", err, out)
	}
	c, _ := os.ReadFile(cert)
	k, _ := os.ReadFile(key)
	return cert, key, combined, os.WriteFile(combined, append(c, k...), 0o600)
}

// startFastlb starts the fastlb binary bin on fastlb's ports moved by
// offset (the -base binary's are 1000 up).
func (r *runner) startFastlb(sc scenario, ports []string, bin string, offset int) (*exec.Cmd, string, error) {
	var urls []string
	for _, p := range ports {
		urls = append(urls, strconv.Quote("http://127.0.0.1:"+p))
	}
	extra := ""
	if sc.fastlb != "" {
		extra = ", " + sc.fastlb
	}
	if sc.routes > 0 {
		extra += ", " + fastlbRoutes(sc, urls)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", fastlbPort+offset)
	if sc.https {
		cert, key, _, err := r.certs()
		if err != nil {
			return nil, "", err
		}
		extra += fmt.Sprintf(`, "tls": {"port": %d, "bind": "127.0.0.1", "certificates": [{"cert_file": %q, "key_file": %q}]}`, fastlbPort+offset+50, cert, key)
		addr = fmt.Sprintf("127.0.0.1:%d", fastlbPort+offset+50)
	}
	cfg := fmt.Sprintf(`{"bind": "127.0.0.1", "port": %d, "admin_port": %d, "log_level": "error", "health_check_frequency": "2s",
		"backends": [%s]%s}`, fastlbPort+offset, adminPort+offset, strings.Join(urls, ","), extra)
	path := filepath.Join(r.work, fmt.Sprintf("fastlb-%d.json", offset))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, "", err
	}
	env := append([]string{"GOMAXPROCS=1"}, r.unitEnv...)
	cmd, err := r.start(r.proxyCPU, env, bin, "-config", path)
	return cmd, addr, err
}

// fastlbRoutes is the routing scenario's "pools" and "routes": pools p0,
// p1, ... of the same backends, and a route for each host name to one.
func fastlbRoutes(sc scenario, urls []string) string {
	var pools, routes []string
	for i := range sc.pools {
		pools = append(pools, fmt.Sprintf(`"p%d": {"backends": [%s]}`, i, strings.Join(urls, ",")))
	}
	for i, h := range routeHosts(sc.routes) {
		routes = append(routes, fmt.Sprintf(`{"host": %q, "pool": "p%d"}`, h, i%sc.pools))
	}
	return `"pools": {` + strings.Join(pools, ",") + `}, "routes": [` + strings.Join(routes, ",") + `]`
}

// haproxyRoutes is the routing scenario for HAProxy: a map file of host
// names to backends be0, be1, ..., each of the same servers, and the
// frontend's use_backend rule that reads it.
func (r *runner) haproxyRoutes(sc scenario, servers string) (useBackend, backends string, err error) {
	var m, be strings.Builder
	for i, h := range routeHosts(sc.routes) {
		fmt.Fprintf(&m, "%s be%d\n", h, i%sc.pools)
	}
	path := filepath.Join(r.work, "hosts.map")
	if err := os.WriteFile(path, []byte(m.String()), 0o600); err != nil {
		return "", "", err
	}
	for i := range sc.pools {
		fmt.Fprintf(&be, "backend be%d\n    balance roundrobin\n%s", i, servers)
	}
	return "    use_backend %[req.hdr(host),lower,map_str(" + path + ")]\n", be.String(), nil
}

func (r *runner) startHAProxy(sc scenario, ports []string) (*exec.Cmd, string, error) {
	bind := fmt.Sprintf("127.0.0.1:%d", haproxyPort)
	if sc.https {
		_, _, combined, err := r.certs()
		if err != nil {
			return nil, "", err
		}
		bind += " ssl crt " + combined + " alpn http/1.1"
		if sc.h2 {
			bind = strings.Replace(bind, "alpn http/1.1", "alpn h2,http/1.1", 1)
		}
	}
	balance := sc.haproxy
	if balance == "" {
		balance = "balance roundrobin"
	}
	var servers strings.Builder
	for i, p := range ports {
		fmt.Fprintf(&servers, "    server b%d 127.0.0.1:%s", i, p)
		if strings.Contains(balance, "cookie") {
			fmt.Fprintf(&servers, " cookie b%d", i)
		}
		servers.WriteString("\n")
	}
	proto := "http"
	if sc.https {
		proto = "https"
	}
	global := ""
	if sc.churn {
		// The churn goes through the runtime API, as fastlb's through
		// its admin API.
		global = "\n    stats socket " + r.haproxySocket() + " level admin"
	}
	var useBackend, routed string
	if sc.routes > 0 {
		var err error
		if useBackend, routed, err = r.haproxyRoutes(sc, servers.String()); err != nil {
			return nil, "", err
		}
	}
	cfg := fmt.Sprintf(`global
    nbthread 1
    maxconn 8000%s
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 10s
frontend fe
    bind %s
%s%s    default_backend be
backend be
    %s
%s%s`, global, bind, haproxyForwarded(proto), useBackend, balance, servers.String(), routed)
	path := filepath.Join(r.work, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, "", err
	}
	cmd, err := r.start(r.proxyCPU, nil, "haproxy", "-f", path, "-db", "-q")
	return cmd, fmt.Sprintf("127.0.0.1:%d", haproxyPort), err
}

// haproxyForwarded is HAProxy's frontend configuration for the headers
// fastlb adds to every request: X-Forwarded-For, X-Forwarded-Proto,
// X-Forwarded-Host (dropped when the request has no Host) and X-Request-Id
// when the client sent none. Without them HAProxy would do less work per
// request than fastlb (with them it spends about a tenth more CPU per
// small GET).
func haproxyForwarded(proto string) string {
	return `    option forwardfor
    unique-id-format %{+X}o%pid-%rt
    http-request set-header X-Forwarded-Proto ` + proto + `
    http-request set-header X-Forwarded-Host %[req.hdr(host)] if { req.hdr(host) -m found }
    http-request del-header X-Forwarded-Host unless { req.hdr(host) -m found }
    http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
`
}

// nginxForwarded is nginx's location configuration for the same headers;
// nginxRequestID, at the http level, keeps the client's X-Request-Id.
const (
	nginxForwarded = `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Request-Id $fastlb_request_id;`
	nginxRequestID = `map $http_x_request_id $fastlb_request_id { "" $request_id; default $http_x_request_id; }`
)

func (r *runner) haproxySocket() string { return filepath.Join(r.work, "haproxy.sock") }

func (r *runner) startNginx(sc scenario, ports []string) (*exec.Cmd, string, error) {
	listen := fmt.Sprintf("127.0.0.1:%d", nginxPort)
	tls := ""
	if sc.https {
		cert, key, _, err := r.certs()
		if err != nil {
			return nil, "", err
		}
		listen += " ssl"
		tls = fmt.Sprintf("ssl_certificate %s; ssl_certificate_key %s; ssl_session_cache shared:SSL:10m;", cert, key)
		if sc.h2 {
			// Its default ends a connection after 1,000 requests.
			listen += " http2"
			tls += " keepalive_requests 1000000;"
		}
	}
	var servers strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&servers, "server 127.0.0.1:%s; ", p)
	}
	w := r.work
	var routed strings.Builder
	if sc.routes > 0 {
		// One upstream per pool, one server block per host name.
		for i := range sc.pools {
			fmt.Fprintf(&routed, "    upstream be%d { %s keepalive 32; }\n", i, servers.String())
		}
		for i, h := range routeHosts(sc.routes) {
			fmt.Fprintf(&routed, `    server { listen %s; server_name %s; %s
        location / { proxy_pass http://be%d; proxy_http_version 1.1; proxy_set_header Connection ""; %s } }
`, listen, h, tls, i%sc.pools, nginxForwarded)
		}
	}
	cfg := fmt.Sprintf(`worker_processes 1;
master_process off;
daemon off;
pid %s/nginx.pid;
error_log %s/nginx-error.log;
events { worker_connections 8000; }
http {
    access_log off;
    %s
    client_body_buffer_size 64k;
    client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;
    server_names_hash_bucket_size 128;
    server_names_hash_max_size 4096;
    upstream be { %s %s keepalive 256; }
%s    server {
        listen %s default_server;
        %s
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            %s
        }
    }
}
`, w, w, nginxRequestID, w, w, w, w, w, sc.nginx, servers.String(), routed.String(), listen, tls, nginxForwarded)
	path := filepath.Join(w, "nginx.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, "", err
	}
	cmd, err := r.start(r.proxyCPU, nil, "nginx", "-c", path, "-e", filepath.Join(w, "nginx-error.log"))
	return cmd, fmt.Sprintf("127.0.0.1:%d", nginxPort), err
}
