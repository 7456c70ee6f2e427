//go:build !linux

package main

import "net"

// listenConfig is Go's own: its net package sets the keep-alive probes of
// each accepted connection.
func listenConfig() net.ListenConfig { return net.ListenConfig{} }
