package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"fastlb/testbackends"
	"fastlb/tlsconf"
)

type pki struct {
	ca    *tlsconf.CA
	dir   string
	roots *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := tlsconf.NewCA("fastlb test CA")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	p := &pki{ca: ca, dir: t.TempDir(), roots: roots}
	os.WriteFile(filepath.Join(p.dir, "ca.pem"), ca.PEM, 0o600)
	return p
}

// issue writes base.pem and base-key.pem for names and returns their paths.
func (p *pki) issue(t *testing.T, base string, names ...string) (string, string) {
	t.Helper()
	cert, key, err := p.ca.Issue(names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, k := filepath.Join(p.dir, base+".pem"), filepath.Join(p.dir, base+"-key.pem")
	os.WriteFile(c, cert, 0o600)
	os.WriteFile(k, key, 0o600)
	return c, k
}

func TestHTTPS(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	p := newPKI(t)
	c1, k1 := p.issue(t, "main", "localhost", "127.0.0.1")
	c2, k2 := p.issue(t, "shop", "shop.test")
	tlsPort := freePort(t)
	proc := startBinary(t, fmt.Sprintf(`, "tls": {"port": %d, "bind": "127.0.0.1", "redirect_http": true,
		"certificates": [{"cert_file": %q, "key_file": %q}, {"cert_file": %q, "key_file": %q}]}`, tlsPort, c1, k1, c2, k2), a)
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	if !strings.Contains(proc.Logs(), "listen_tls=https://"+tlsAddr) {
		t.Errorf("start line does not name the HTTPS listener:\n%s", proc.Logs())
	}

	certFor := func(sni string) string {
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("SNI %q: %v", sni, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := certFor("shop.test"); got != "shop.test" {
		t.Errorf("SNI shop.test got %s", got)
	}
	if got := certFor(""); got != "localhost" {
		t.Errorf("no SNI got %s, want the first certificate", got)
	}
	if got := certFor("other.test"); got != "localhost" {
		t.Errorf("unknown SNI got %s, want the first certificate", got)
	}

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots, ServerName: "localhost"}, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var reused []bool
	getTLS := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", "https://"+tlsAddr+path, nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) },
		}))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	code, body := getTLS("/echo")
	if code != 200 || !strings.Contains(body, `["X-Forwarded-Proto","https"]`) {
		t.Errorf("HTTPS through fastlb: %d %s", code, body)
	}

	// The plain port redirects, keeping path and query.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get("http://" + proc.addr + "/a/b%2Fc?x=1&y=%20")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := fmt.Sprintf("https://127.0.0.1:%d/a/b%%2Fc?x=1&y=%%20", tlsPort); resp.StatusCode != 308 || resp.Header.Get("Location") != want {
		t.Errorf("redirect: %d %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if a.Requests() != 1 {
		t.Errorf("the redirect reached the backend")
	}

	// Certificate reload: a new serial for new handshakes; the open
	// keep-alive connection stays open.
	oldSerial := serialOf(t, tlsAddr, p.roots)
	p.issue(t, "main", "localhost", "127.0.0.1")
	proc.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, proc, `msg="configuration reloaded"`)
	if code, _ := getTLS("/"); code != 200 {
		t.Fatalf("after reload: %d", code)
	}
	if !reused[len(reused)-1] {
		t.Error("the keep-alive connection did not survive the certificate reload")
	}
	if newSerial := serialOf(t, tlsAddr, p.roots); newSerial == oldSerial {
		t.Error("a new handshake still gets the old certificate")
	}

	// A broken pair is refused; the old certificate keeps serving.
	os.WriteFile(c1, []byte("garbage"), 0o600)
	proc.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, proc, "do not make a certificate and key pair")
	if got := certFor("localhost"); got != "localhost" {
		t.Errorf("after a refused reload: %s", got)
	}
}

func serialOf(t *testing.T, addr string, roots *x509.CertPool) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestHTTPSMinVersion(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	p := newPKI(t)
	c, k := p.issue(t, "main", "localhost")
	tlsPort := freePort(t)
	startBinary(t, fmt.Sprintf(`, "tls": {"port": %d, "bind": "127.0.0.1", "min_version": "1.3", "certificates": [{"cert_file": %q, "key_file": %q}]}`, tlsPort, c, k), a)
	addr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.roots, ServerName: "localhost", MaxVersion: tls.VersionTLS12}); err == nil {
		t.Error("TLS 1.2 accepted under min_version 1.3")
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("version %x", v)
	}
	conn.Close()
}

func TestHTTPSBackend(t *testing.T) {
	p := newPKI(t)
	c, k := p.issue(t, "backend", "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	b, err := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "secure", TLS: &pair})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	trusted := startBinary(t, fmt.Sprintf(`, "backend_tls": {"ca_file": %q}, "health_check_method": "http", "health_check": {"path": "/health"}`,
		filepath.Join(p.dir, "ca.pem")), b)
	if !strings.Contains(trusted.Logs(), "healthy=1/1") {
		t.Errorf("the HTTP health check of an https backend did not use ca_file:\n%s", trusted.Logs())
	}
	if code, body := get(t, "http://"+trusted.addr+"/"); code != 200 || body != "backend secure\n" {
		t.Errorf("https backend with ca_file: %d %q", code, body)
	}
	untrusted := startBinary(t, "", b)
	if code, _ := get(t, "http://"+untrusted.addr+"/"); code != 502 {
		t.Errorf("https backend without its CA: %d, want 502", code)
	}
	waitLog(t, untrusted, "certificate signed by unknown authority")
	insecure := startBinary(t, `, "backend_tls": {"insecure_skip_verify": true}`, b)
	if code, _ := get(t, "http://"+insecure.addr+"/"); code != 200 {
		t.Errorf("insecure_skip_verify: %d", code)
	}
	waitLog(t, insecure, "insecure_skip_verify is on")
}

func TestCheckCertificates(t *testing.T) {
	p := newPKI(t)
	c, _ := p.issue(t, "main", "localhost")
	missing := filepath.Join(p.dir, "nope-key.pem")
	cfgPath := writeConfig(t, fmt.Sprintf(`{"tls": {"certificates": [{"cert_file": %q, "key_file": %q}]}, "backend_tls": {"ca_file": "/nonexistent/ca.pem"}}`, c, missing))
	_, errOut, code := runBinary(t, "-check", "-config", cfgPath)
	want := []string{
		fmt.Sprintf("fastlb: %s: tls.certificates[0].key_file: cannot read %s: no such file or directory", cfgPath, missing),
		fmt.Sprintf("fastlb: %s: backend_tls.ca_file: cannot read /nonexistent/ca.pem: no such file or directory", cfgPath),
	}
	if code != 1 || strings.TrimSpace(errOut) != strings.Join(want, "\n") {
		t.Errorf("exit %d:\n%s\nwant:\n%s", code, errOut, strings.Join(want, "\n"))
	}
	// Startup fails the same way, binding nothing.
	_, errOut, code = runBinary(t, "-config", cfgPath)
	if code != 1 || !strings.Contains(errOut, want[0]) {
		t.Errorf("startup: exit %d, %s", code, errOut)
	}
}

// TestClientListenersDeferAccept: on the plain and HTTPS listeners a
// connection counts (and is served) once its client has sent something;
// one that has only connected is still the kernel's.
func TestClientListenersDeferAccept(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_DEFER_ACCEPT is Linux's")
	}
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	p := newPKI(t)
	c, k := p.issue(t, "main", "127.0.0.1")
	tlsPort := freePort(t)
	proc := startBinary(t, fmt.Sprintf(`, "tls": {"port": %d, "bind": "127.0.0.1", "certificates": [{"cert_file": %q, "key_file": %q}]}`, tlsPort, c, k), a)
	open := func() string {
		t.Helper()
		_, body := get(t, "http://"+proc.adminAddr+"/metrics")
		for line := range strings.Lines(body) {
			if v, ok := strings.CutPrefix(line, "fastlb_client_connections "); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Fatal("no fastlb_client_connections in /metrics")
		return ""
	}
	silent := func(addr string) net.Conn {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		time.Sleep(300 * time.Millisecond)
		return conn
	}

	plain := silent(proc.addr)
	if n := open(); n != "0" {
		t.Errorf("%s client connections with one connected to the plain listener and silent, want 0", n)
	}
	fmt.Fprintf(plain, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(plain), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("plain request: %v %v", resp, err)
	}
	if n := open(); n != "1" {
		t.Errorf("%s client connections after a plain request on a kept-alive connection, want 1", n)
	}

	conn := silent(fmt.Sprintf("127.0.0.1:%d", tlsPort))
	if n := open(); n != "1" {
		t.Errorf("%s client connections with one more connected to the HTTPS listener and silent, want 1", n)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: "127.0.0.1", InsecureSkipVerify: true})
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(tc), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTPS request: %v %v", resp, err)
	}
	if n := open(); n != "2" {
		t.Errorf("%s client connections after an HTTPS request on a kept-alive connection, want 2", n)
	}
}

// TestExpiredCertificate: a certificate past its end date is a warning,
// not an error: -check passes naming it, fastlb starts and reloads serving
// it, and the metric of every certificate's end lets monitoring see it.
func TestExpiredCertificate(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	p := newPKI(t)
	good, goodKey := p.issue(t, "good", "localhost")
	certPEM, keyPEM, err := p.ca.Issue([]string{"old.test"}, -time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	old, oldKey := filepath.Join(p.dir, "old.pem"), filepath.Join(p.dir, "old-key.pem")
	os.WriteFile(old, certPEM, 0o600)
	os.WriteFile(oldKey, keyPEM, 0o600)
	tlsPort := freePort(t)
	tlsKey := fmt.Sprintf(`, "tls": {"port": %d, "bind": "127.0.0.1", "certificates": [{"cert_file": %q, "key_file": %q}, {"cert_file": %q, "key_file": %q}]}`,
		tlsPort, good, goodKey, old, oldKey)

	cfgPath := writeConfig(t, `{"backends": ["http://127.0.0.1:1"]`+tlsKey+`}`)
	out, errOut, code := runBinary(t, "-check", "-config", cfgPath)
	wantWarning := fmt.Sprintf("fastlb: %s: warning: tls.certificates[1].cert_file: %s expired on ", cfgPath, old)
	if code != 0 || out != "configuration OK\n" || !strings.HasPrefix(errOut, wantWarning) || strings.Count(errOut, "\n") != 1 {
		t.Errorf("-check: exit %d, out %q, err %q; want 0, OK and a warning starting %q", code, out, errOut, wantWarning)
	}

	proc := startBinary(t, tlsKey, a)
	waitLog(t, proc, `msg="certificate expired; serving it anyway"`)
	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tlsPort), &tls.Config{ServerName: "old.test", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	served := c.ConnectionState().PeerCertificates[0]
	c.Close()
	if served.Subject.CommonName != "old.test" {
		t.Errorf("SNI old.test got %s", served.Subject.CommonName)
	}
	_, metrics := get(t, "http://"+proc.adminAddr+"/metrics")
	for file, want := range map[string]int64{old: served.NotAfter.Unix(), good: time.Now().Add(time.Hour).Unix()} {
		re := regexp.MustCompile(`(?m)^fastlb_tls_certificate_not_after_seconds\{file="` + regexp.QuoteMeta(file) + `"\} (\d+)$`)
		m := re.FindStringSubmatch(metrics)
		if m == nil {
			t.Errorf("no fastlb_tls_certificate_not_after_seconds for %s in:\n%s", file, metrics)
			continue
		}
		if got, _ := strconv.ParseInt(m[1], 10, 64); got < want-60 || got > want+60 {
			t.Errorf("%s: not after %d, want about %d", file, got, want)
		}
	}

	// A reload with it goes through too, warning again.
	resp, err := http.Post("http://"+proc.adminAddr+"/api/v1/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	reloaded, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("reload with an expired certificate: %d %s", resp.StatusCode, reloaded)
	}
	waitLogCount(t, proc, `msg="certificate expired; serving it anyway"`, 2)
}

// TestUpgradeKeepsSecrets: the new process of a binary upgrade takes over
// the sticky cookie key made at start and the session ticket keys: a
// client's cookie still names its backend and its TLS session resumes.
func TestUpgradeKeepsSecrets(t *testing.T) {
	var backends []*testbackends.Server
	for _, name := range []string{"a", "b", "c"} {
		s, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: name})
		defer s.Close()
		backends = append(backends, s)
	}
	p := newPKI(t)
	cert, key := p.issue(t, "main", "localhost")
	tlsPort := freePort(t)
	proc := startBinary(t, fmt.Sprintf(`, "sticky": {"mode": "cookie"}, "shutdown_timeout": "5s",
		"tls": {"port": %d, "bind": "127.0.0.1", "certificates": [{"cert_file": %q, "key_file": %q}]}`, tlsPort, cert, key), backends...)

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: p.roots, ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(4)}}}
	type answer struct {
		backend, cookie string
		resumed         bool
	}
	ask := func(url, cookie string) answer {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		a := answer{backend: resp.Header.Get("X-Backend"), cookie: resp.Header.Get("Set-Cookie")}
		if resp.TLS != nil {
			a.resumed = resp.TLS.DidResume
		}
		return a
	}
	first := ask("http://"+proc.addr+"/", "")
	if first.cookie == "" {
		t.Fatal("no sticky cookie set")
	}
	cookie, _, _ := strings.Cut(first.cookie, ";")
	httpsURL := fmt.Sprintf("https://127.0.0.1:%d/", tlsPort)
	ask(httpsURL, "") // a session ticket for the next connection
	if !ask(httpsURL, "").resumed {
		t.Fatal("no TLS session resumption before the upgrade")
	}

	oldPID := proc.cmd.Process.Pid
	proc.cmd.Process.Signal(syscall.SIGUSR2)
	deadline := time.Now().Add(20 * time.Second)
	for !processGone(oldPID) {
		if time.Now().After(deadline) {
			t.Fatalf("the old process did not exit:\n%s", proc.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	newPID := statusPID(t, proc.adminAddr)
	defer syscall.Kill(newPID, syscall.SIGKILL)
	if newPID == oldPID {
		t.Fatal("no new process")
	}
	for range 5 {
		if got := ask("http://"+proc.addr+"/", cookie); got.backend != first.backend || got.cookie != "" {
			t.Errorf("after the upgrade the cookie of %s went to %s (Set-Cookie %q)", first.backend, got.backend, got.cookie)
		}
	}
	if !ask(httpsURL, "").resumed {
		t.Error("the TLS session did not resume on the new process")
	}
}
