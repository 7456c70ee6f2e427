package upstream

import (
	"net"

	"github.com/pires/go-proxyproto"
)

// ProxyHeader is the PROXY protocol header (version 1 or 2) that names
// client as the source of a connection and local, the address it came to,
// as its destination. Addresses that are not TCP give the header of an
// unknown source (v1 "PROXY UNKNOWN", v2 LOCAL), which a backend takes as
// the connection's own.
func ProxyHeader(version int, client, local net.Addr) []byte {
	b, err := proxyproto.HeaderProxyFromAddrs(byte(version), client, local).Format()
	if err != nil {
		return LocalProxyHeader(version)
	}
	return b
}

// LocalProxyHeader is the header of a connection made by fastlb itself (a
// health check): v2's LOCAL command, v1's UNKNOWN protocol.
func LocalProxyHeader(version int) []byte {
	h := &proxyproto.Header{Version: byte(version), Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	b, err := h.Format()
	if err != nil {
		return []byte("PROXY UNKNOWN\r\n")
	}
	return b
}

// SetSendProxy makes every backend's new connections start with a PROXY
// protocol header of that version (1 or 2; 0: none). A change closes the
// idle connections, which were made under the old setting.
func (p *Pool) SetSendProxy(version int) {
	if int(p.client.sendProxy.Swap(int32(version))) != version {
		p.CloseIdleConnections()
	}
}

// ProxyVersion is the PROXY protocol version send_proxy_protocol names: 0
// for "off".
func ProxyVersion(setting string) int {
	switch setting {
	case "v1":
		return 1
	case "v2":
		return 2
	}
	return 0
}
