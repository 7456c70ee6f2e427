// Command fastlb-certs makes a local certificate authority and a server
// certificate signed by it, for trying fastlb's HTTPS listener:
//
//	fastlb-certs -dir certs                     # localhost, 127.0.0.1, ::1
//	fastlb-certs -dir certs -names shop.test,*.shop.test
//
// It writes DIR/ca.pem (give it to clients: curl --cacert certs/ca.pem),
// DIR/cert.pem and DIR/key.pem (give them to fastlb's tls.certificates).
// Not for production.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"fastlb/tlsconf"
)

func main() {
	dir := flag.String("dir", "certs", "directory to write ca.pem, cert.pem and key.pem into")
	names := flag.String("names", "localhost,127.0.0.1,::1", "comma-separated DNS names and IP addresses of the certificate")
	days := flag.Int("days", 365, "validity of the certificate in days")
	flag.Parse()
	if err := run(*dir, strings.Split(*names, ","), time.Duration(*days)*24*time.Hour); err != nil {
		fmt.Fprintln(os.Stderr, "fastlb-certs:", err)
		os.Exit(1)
	}
}

func run(dir string, names []string, validity time.Duration) error {
	ca, err := tlsconf.NewCA("fastlb local CA")
	if err != nil {
		return err
	}
	cert, key, err := ca.Issue(names, validity)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{"ca.pem", ca.PEM, 0o644}, {"cert.pem", cert, 0o644}, {"key.pem", key, 0o600}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	fmt.Printf("wrote %s/ca.pem, %s/cert.pem and %s/key.pem for %s\n", dir, dir, dir, strings.Join(names, ", "))
	return nil
}
