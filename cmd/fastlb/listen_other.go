//go:build !linux

package main

import "net"

// listenConfig is Go's own: its net package sets the keep-alive probes of
// each accepted connection.
func listenConfig() net.ListenConfig { return net.ListenConfig{} }

// deferAccept does nothing where TCP_DEFER_ACCEPT does not exist.
func deferAccept(ln net.Listener) error { return nil }
