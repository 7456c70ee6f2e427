// Package tlsconf loads fastlb's certificates and builds its TLS
// configurations: the HTTPS listener's (certificates chosen by SNI, swapped
// atomically on reload, session ticket keys rotated by fastlb) and the
// backends' (extra CA bundle, host name verification).
package tlsconf

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fastlb/config"
)

// Certificates is a loaded set of certificates, indexed by the names they
// serve. It is never modified after LoadCertificates returns.
type Certificates struct {
	list     []*tls.Certificate
	files    []string                    // list[i]'s cert_file
	exact    map[string]*tls.Certificate // lower-case DNS names and IP addresses
	wildcard map[string]*tls.Certificate // "example.com" for "*.example.com"
}

// LoadCertificates reads and pairs every certificate and key of t. Its
// error, a *config.Error like a configuration file's, names each file that
// is missing or does not pair, at its JSON path.
func LoadCertificates(t *config.TLS) (*Certificates, error) {
	cs := &Certificates{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	var problems []config.Problem
	for i, c := range t.Certificates {
		path := fmt.Sprintf("tls.certificates[%d]", i)
		cert, err := loadPair(c)
		if err != nil {
			problems = append(problems, config.Problem{Path: path + err.field, Msg: err.msg})
			continue
		}
		cs.list = append(cs.list, cert)
		cs.files = append(cs.files, c.CertFile)
		cs.index(cert)
	}
	if len(problems) > 0 {
		return nil, &config.Error{Problems: problems}
	}
	return cs, nil
}

type pairError struct{ field, msg string }

func loadPair(c config.Certificate) (*tls.Certificate, *pairError) {
	for _, f := range []struct{ field, file string }{{".cert_file", c.CertFile}, {".key_file", c.KeyFile}} {
		if _, err := os.Stat(f.file); err != nil {
			return nil, &pairError{f.field, fmt.Sprintf("cannot read %s: %v", f.file, unwrapPath(err))}
		}
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, &pairError{"", fmt.Sprintf("%s and %s do not make a certificate and key pair: %v", c.CertFile, c.KeyFile, unwrapPath(err))}
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, &pairError{".cert_file", fmt.Sprintf("%s: %v", c.CertFile, err)}
		}
	}
	return &cert, nil
}

// NotAfter is the end of validity of one certificate, by its file.
type NotAfter struct {
	File string
	Time time.Time
}

// NotAfter lists when each certificate ends, in configuration order.
func (cs *Certificates) NotAfter() []NotAfter {
	out := make([]NotAfter, len(cs.list))
	for i, c := range cs.list {
		out[i] = NotAfter{File: cs.files[i], Time: c.Leaf.NotAfter}
	}
	return out
}

// Expired returns a warning for each certificate past its end date at now,
// naming its JSON path, its file and the date. Such a certificate is still
// served, as nginx and HAProxy serve one: refusing it would turn a lapse
// that monitoring reports (fastlb_tls_certificate_not_after_seconds) into
// an outage at the next restart.
func (cs *Certificates) Expired(now time.Time) []config.Problem {
	var out []config.Problem
	for i, c := range cs.list {
		if now.After(c.Leaf.NotAfter) {
			out = append(out, config.Problem{
				Path: fmt.Sprintf("tls.certificates[%d].cert_file", i),
				Msg:  fmt.Sprintf("%s expired on %s; it is served anyway", cs.files[i], c.Leaf.NotAfter.UTC().Format(time.RFC3339)),
			})
		}
	}
	return out
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// index records the names a certificate serves; earlier certificates win.
func (cs *Certificates) index(cert *tls.Certificate) {
	names := cert.Leaf.DNSNames
	if len(names) == 0 && len(cert.Leaf.IPAddresses) == 0 && cert.Leaf.Subject.CommonName != "" {
		names = []string{cert.Leaf.Subject.CommonName}
	}
	for _, n := range names {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		m, key := cs.exact, n
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			m, key = cs.wildcard, rest
		}
		if _, taken := m[key]; !taken {
			m[key] = cert
		}
	}
	for _, ip := range cert.Leaf.IPAddresses {
		if _, taken := cs.exact[ip.String()]; !taken {
			cs.exact[ip.String()] = cert
		}
	}
}

// For returns the certificate for an SNI name: an exact match, else a
// wildcard one label deep, else the first certificate.
func (cs *Certificates) For(serverName string) *tls.Certificate {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if c := cs.exact[name]; c != nil {
		return c
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if c := cs.wildcard[parent]; c != nil {
			return c
		}
	}
	return cs.list[0]
}

// Listener serves the HTTPS listener's certificates. Swap replaces them
// atomically: new handshakes get the new certificates, open connections
// keep theirs.
type Listener struct {
	certs  atomic.Pointer[Certificates]
	config *tls.Config

	mu   sync.Mutex
	keys [][32]byte // session ticket keys, newest first
}

// ticketKeys is how many session ticket keys are kept: a ticket stays
// valid for ticketKeys rotations.
const ticketKeys = 3

// NewListener builds the listener's TLS configuration: the certificates
// chosen by SNI, the minimum version, modern cipher suites for TLS 1.2 (TLS
// 1.3's are all modern), ALPN h2 (with http2) and http/1.1, and session
// tickets under keys that RotateTicketKeys renews.
func NewListener(certs *Certificates, minVersion string, http2 bool) *Listener {
	l := &Listener{}
	l.certs.Store(certs)
	min := uint16(tls.VersionTLS12)
	if minVersion == "1.3" {
		min = tls.VersionTLS13
	}
	l.config = &tls.Config{
		MinVersion: min,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return l.certs.Load().For(hello.ServerName), nil
		},
	}
	if http2 {
		// The server's order decides: h2 first.
		l.config.NextProtos = []string{"h2", "http/1.1"}
	}
	l.rotate()
	return l
}

// Config is the tls.Config to wrap the HTTPS listener with.
func (l *Listener) Config() *tls.Config { return l.config }

// Swap installs new certificates for the next handshakes.
func (l *Listener) Swap(certs *Certificates) { l.certs.Store(certs) }

// Certificates are the certificates in use.
func (l *Listener) Certificates() *Certificates { return l.certs.Load() }

// rotate adds a fresh session ticket key and drops the oldest beyond
// ticketKeys. New tickets use the newest key; older keys still decrypt.
func (l *Listener) rotate() {
	var k [32]byte
	rand.Read(k[:])
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys = append([][32]byte{k}, l.keys...)
	if len(l.keys) > ticketKeys {
		l.keys = l.keys[:ticketKeys]
	}
	l.config.SetSessionTicketKeys(l.keys)
}

// TicketKeys are the session ticket keys in use, newest first: what a new
// process of a binary upgrade takes over (SetTicketKeys), so that sessions
// resume across it.
func (l *Listener) TicketKeys() [][32]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.keys)
}

// SetTicketKeys replaces the session ticket keys with keys, newest first
// (at most ticketKeys of them are kept); nothing changes when keys is empty.
func (l *Listener) SetTicketKeys(keys [][32]byte) {
	if len(keys) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys = slices.Clone(keys[:min(len(keys), ticketKeys)])
	l.config.SetSessionTicketKeys(l.keys)
}

// RotateTicketKeys renews the session ticket key every interval until stop
// is closed.
func (l *Listener) RotateTicketKeys(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			l.rotate()
		}
	}
}

// BackendConfig is the base TLS configuration for https:// backends: the
// system roots plus b.CAFile, and b.InsecureSkipVerify. Each backend clones
// it and sets ServerName to its host: a name is sent as SNI and verified
// against the certificate, an IP address is verified against its IP SANs.
func BackendConfig(b config.BackendTLS) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: b.InsecureSkipVerify, //nolint:gosec // the operator's explicit choice, logged at start
		NextProtos:         []string{"http/1.1"},
	}
	if b.CAFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(b.CAFile)
	if err != nil {
		return nil, &config.Error{Problems: []config.Problem{{Path: "backend_tls.ca_file", Msg: fmt.Sprintf("cannot read %s: %v", b.CAFile, unwrapPath(err))}}}
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, &config.Error{Problems: []config.Problem{{Path: "backend_tls.ca_file", Msg: fmt.Sprintf("%s holds no PEM certificate", b.CAFile)}}}
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// Check loads every certificate, key and CA file cfg names, as startup
// does, and returns the problems found, and the warnings (certificates
// past their end date, see Certificates.Expired).
func Check(cfg *config.Config) (problems, warnings []config.Problem) {
	if cfg.TLS != nil {
		certs, err := LoadCertificates(cfg.TLS)
		if err != nil {
			var e *config.Error
			if errors.As(err, &e) {
				problems = append(problems, e.Problems...)
			}
		} else {
			warnings = certs.Expired(time.Now())
		}
	}
	if _, err := BackendConfig(cfg.BackendTLS); err != nil {
		var e *config.Error
		if errors.As(err, &e) {
			problems = append(problems, e.Problems...)
		}
	}
	return problems, warnings
}
