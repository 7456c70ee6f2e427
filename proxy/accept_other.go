//go:build !linux

package proxy

import "net"

// DeferAccept does nothing where TCP_DEFER_ACCEPT does not exist.
func DeferAccept(ln net.Listener) error { return nil }
