package proxy

import (
	"bufio"
	"bytes"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"fastlb/internal/header"
)

// FuzzRewrite feeds arbitrary header lines through the request checks and
// rewriting: nothing may panic, and a request that passes the checks leaves
// with no hop-by-hop header and the client's address last in
// X-Forwarded-For.
func FuzzRewrite(f *testing.F) {
	f.Add("Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5")
	f.Add("X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nTE: trailers")
	f.Add("connection: Upgrade\r\nupgrade: websocket\r\nproxy-authorization: x")
	f.Add("Transfer-Encoding: chunked\r\nContent-Length: 3")
	f.Add("x-request-id: a\r\nX-FORWARDED-HOST: b\r\nx-forwarded-proto: ftp")
	f.Add("Connection: X-Request-Id\r\nX-Request-Id: gone")
	setAnew := []string{"Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id"}
	f.Fuzz(func(t *testing.T, lines string) {
		raw := "GET /p HTTP/1.1\r\nHost: h\r\n" + lines + "\r\n\r\n"
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7)}, nil)
		if err := ctx.Request.Header.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			return
		}
		h := &ctx.Request.Header
		seen, err := header.CheckFields(h.RawHeaders())
		if err != nil {
			return
		}
		// setForwarded and setRequestID look only for the fields
		// CheckFields noted.
		for i, name := range header.ForwardFields {
			if bit := header.FieldXForwardedFor << i; seen&bit == 0 && len(h.PeekAll(name)) > 0 {
				t.Fatalf("%s in %q not noted by CheckFields", name, raw)
			}
		}
		var named [][]byte
		for _, v := range h.PeekAll("Connection") {
			for tok := range bytes.SplitSeq(v, []byte(",")) {
				if tok = bytes.TrimSpace(tok); len(tok) > 0 {
					named = append(named, bytes.Clone(tok))
				}
			}
		}
		header.RemoveHopByHop(h, seen)
		setForwarded(&ctx, seen)
		var p Proxy
		p.setRequestID(h, seen)
		for k := range h.All() {
			for _, hop := range header.HopFields {
				if strings.EqualFold(string(k), hop) && !strings.EqualFold(hop, "Transfer-Encoding") {
					t.Fatalf("hop-by-hop %s left in %q", k, raw)
				}
			}
			for _, n := range named {
				// The proxy sets Host's value and the forwarding fields anew.
				if bytes.EqualFold(k, n) && !slices.ContainsFunc(setAnew, func(f string) bool { return bytes.EqualFold(n, []byte(f)) }) {
					t.Fatalf("%s named in Connection left in %q", k, raw)
				}
			}
		}
		if len(h.Host()) == 0 {
			t.Fatalf("Host removed from %q", raw)
		}
		if xff := string(h.Peek("X-Forwarded-For")); !strings.HasSuffix(xff, "192.0.2.7") {
			t.Fatalf("X-Forwarded-For %q does not end with the client", xff)
		}
		if ids := h.PeekAll("X-Request-Id"); len(ids) == 0 || len(ids[0]) == 0 {
			t.Fatalf("no X-Request-Id in the request from %q", raw)
		}
	})
}
