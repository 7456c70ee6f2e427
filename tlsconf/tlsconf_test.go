package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fastlb/config"
)

// writePair issues a certificate for names and writes it to dir.
func writePair(t *testing.T, ca *CA, dir, base string, names ...string) config.Certificate {
	t.Helper()
	cert, key, err := ca.Issue(names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := config.Certificate{CertFile: filepath.Join(dir, base+".pem"), KeyFile: filepath.Join(dir, base+"-key.pem")}
	if err := os.WriteFile(c.CertFile, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func name(c *tls.Certificate) string { return c.Leaf.Subject.CommonName }

func TestSNI(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certs, err := LoadCertificates(&config.TLS{Certificates: []config.Certificate{
		writePair(t, ca, dir, "default", "default.test"),
		writePair(t, ca, dir, "shop", "shop.test", "www.shop.test"),
		writePair(t, ca, dir, "wild", "*.apps.test"),
		writePair(t, ca, dir, "exact", "special.apps.test"),
		writePair(t, ca, dir, "ip", "10.1.2.3"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	for sni, want := range map[string]string{
		"shop.test": "shop.test", "WWW.Shop.Test.": "shop.test", "a.apps.test": "*.apps.test",
		"special.apps.test": "special.apps.test", "deep.a.apps.test": "default.test", "apps.test": "default.test",
		"": "default.test", "unknown.test": "default.test", "10.1.2.3": "10.1.2.3",
	} {
		if got := name(certs.For(sni)); got != want {
			t.Errorf("SNI %q got %s, want %s", sni, got, want)
		}
	}
}

func TestLoadProblems(t *testing.T) {
	ca, _ := NewCA("test CA")
	dir := t.TempDir()
	good := writePair(t, ca, dir, "good", "a.test")
	other := writePair(t, ca, dir, "other", "b.test")
	expiredCert, expiredKey, _ := ca.Issue([]string{"old.test"}, -time.Minute)
	os.WriteFile(filepath.Join(dir, "expired.pem"), expiredCert, 0o600)
	os.WriteFile(filepath.Join(dir, "expired-key.pem"), expiredKey, 0o600)
	_, err := LoadCertificates(&config.TLS{Certificates: []config.Certificate{
		good,
		{CertFile: good.CertFile, KeyFile: filepath.Join(dir, "missing-key.pem")},
		{CertFile: filepath.Join(dir, "missing.pem"), KeyFile: good.KeyFile},
		{CertFile: good.CertFile, KeyFile: other.KeyFile},
		{CertFile: filepath.Join(dir, "expired.pem"), KeyFile: filepath.Join(dir, "expired-key.pem")},
	}})
	var e *config.Error
	if !errors.As(err, &e) || len(e.Problems) != 3 {
		t.Fatalf("want 3 problems, got %v", err)
	}
	want := []string{
		"tls.certificates[1].key_file: cannot read " + filepath.Join(dir, "missing-key.pem") + ": no such file or directory",
		"tls.certificates[2].cert_file: cannot read " + filepath.Join(dir, "missing.pem") + ": no such file or directory",
		"tls.certificates[3]: " + good.CertFile + " and " + other.KeyFile + " do not make a certificate and key pair",
	}
	for i, w := range want {
		if got := e.Problems[i].String(); !strings.HasPrefix(got, w) {
			t.Errorf("problem %d = %q, want %q", i, got, w)
		}
	}

	// An expired certificate loads, with a warning naming it and its date.
	expired := config.Certificate{CertFile: filepath.Join(dir, "expired.pem"), KeyFile: filepath.Join(dir, "expired-key.pem")}
	certs, err := LoadCertificates(&config.TLS{Certificates: []config.Certificate{good, expired}})
	if err != nil {
		t.Fatalf("an expired certificate is an error: %v", err)
	}
	if certs.For("old.test") != certs.list[1] {
		t.Error("the expired certificate is not served for its name")
	}
	warnings := certs.Expired(time.Now())
	wantWarning := "tls.certificates[1].cert_file: " + expired.CertFile + " expired on "
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0].String(), wantWarning) || !strings.HasSuffix(warnings[0].String(), "it is served anyway") {
		t.Errorf("warnings %v, want one starting %q", warnings, wantWarning)
	}
	na := certs.NotAfter()
	if len(na) != 2 || na[1].File != expired.CertFile || !na[1].Time.Before(time.Now()) || !na[0].Time.After(time.Now()) {
		t.Errorf("NotAfter = %v", na)
	}
}

func TestBackendConfig(t *testing.T) {
	ca, _ := NewCA("test CA")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	cfg, err := BackendConfig(config.BackendTLS{CAFile: caFile})
	if err != nil || cfg.RootCAs == nil || cfg.InsecureSkipVerify {
		t.Fatalf("BackendConfig = %+v, %v", cfg, err)
	}
	block, _ := pem.Decode(ca.PEM)
	caCert, _ := x509.ParseCertificate(block.Bytes)
	if _, err := caCert.Verify(x509.VerifyOptions{Roots: cfg.RootCAs}); err != nil {
		t.Errorf("the CA is not in the roots: %v", err)
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate"), 0o600)
	for file, want := range map[string]string{
		filepath.Join(dir, "none.pem"): "backend_tls.ca_file: cannot read",
		junk:                           "backend_tls.ca_file: " + junk + " holds no PEM certificate",
	} {
		if _, err := BackendConfig(config.BackendTLS{CAFile: file}); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ca_file %s: %v, want %q", file, err, want)
		}
	}
}

// TestListenerSwapAndResumption runs real handshakes: a swap serves the new
// certificate to new connections, and a session resumes across a ticket
// key rotation.
func TestListenerSwapAndResumption(t *testing.T) {
	ca, _ := NewCA("test CA")
	dir := t.TempDir()
	certs1, _ := LoadCertificates(&config.TLS{Certificates: []config.Certificate{writePair(t, ca, dir, "one", "localhost")}})
	l := NewListener(certs1, "1.2", true)
	addr := serveTLS(t, l)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	cache := tls.NewLRUClientSessionCache(4)
	dial := func(maxVersion uint16) *tls.ConnectionState {
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: roots, ClientSessionCache: cache, MaxVersion: maxVersion})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		st := c.ConnectionState()
		return &st
	}
	first := dial(tls.VersionTLS12)
	if first.NegotiatedProtocol != "" && first.NegotiatedProtocol != "http/1.1" {
		t.Errorf("ALPN %q", first.NegotiatedProtocol)
	}
	l.rotate()
	if again := dial(tls.VersionTLS12); !again.DidResume {
		t.Error("a session did not resume after one ticket key rotation")
	}
	certs2, _ := LoadCertificates(&config.TLS{Certificates: []config.Certificate{writePair(t, ca, dir, "two", "localhost")}})
	l.Swap(certs2)
	cache2 := tls.NewLRUClientSessionCache(4)
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: roots, ClientSessionCache: cache2})
	if err != nil {
		t.Fatal(err)
	}
	got := c.ConnectionState().PeerCertificates[0].SerialNumber
	c.Close()
	if got.Cmp(certs2.list[0].Leaf.SerialNumber) != 0 {
		t.Error("a new connection after Swap did not get the new certificate")
	}
}

func TestMinVersion(t *testing.T) {
	ca, _ := NewCA("test CA")
	certs, _ := LoadCertificates(&config.TLS{Certificates: []config.Certificate{writePair(t, ca, t.TempDir(), "c", "localhost")}})
	l := NewListener(certs, "1.3", false)
	addr := serveTLS(t, l)
	_, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("TLS 1.2 under min_version 1.3: %v", err)
	}
}

// serveTLS serves l's configuration on 127.0.0.1: each connection does its
// handshake and is read until the client closes it.
func serveTLS(t *testing.T, l *Listener) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", l.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}
