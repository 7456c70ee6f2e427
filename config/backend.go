package config

// Backend URLs: a backend's url resolved into scheme, host and address.

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// resolve parses and checks the backend's URL, filling Scheme, Host, Addr
// and, when empty, ID.
func (b *Backend) resolve() error {
	u, err := url.Parse(b.URL)
	if err == nil && (u.Opaque != "" || u.Host == "" && u.Scheme == "") {
		return fmt.Errorf("%q has no scheme: write it as http://host:port", b.URL)
	}
	if err != nil {
		return fmt.Errorf("invalid URL %q (want http://host:port or https://host:port)", b.URL)
	}
	switch u.Scheme {
	case "http", "https", "h2c", "h2":
	default:
		return fmt.Errorf("scheme of %q must be http, https, h2c (HTTP/2 in clear) or h2 (HTTP/2 over TLS)", b.URL)
	}
	if u.User != nil {
		return fmt.Errorf("%q must not carry user information", b.URL)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return fmt.Errorf("%q must not have a path, query or fragment: fastlb forwards the client's", b.URL)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%q has no host", b.URL)
	}
	port := u.Port()
	if port == "" {
		if strings.HasSuffix(u.Host, ":") {
			return fmt.Errorf("%q has an empty port", b.URL)
		}
		port = "80"
		if u.Scheme == "https" || u.Scheme == "h2" {
			port = "443"
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port of %q must be 1..65535", b.URL)
	}
	b.Scheme, b.Host, b.Addr = u.Scheme, host, net.JoinHostPort(host, port)
	if b.ID == "" {
		b.ID = b.Addr
	}
	return nil
}

// ResolveBackend checks a backend built in code the way Load checks the
// file's backends, and fills its derived fields.
func ResolveBackend(b *Backend) error {
	d := &decoder{}
	d.checkBackend("", b)
	if len(d.problems) > 0 {
		return &Error{Problems: d.problems}
	}
	return nil
}
