package proxy

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"fastlb/upstream"
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
	f.Fuzz(func(t *testing.T, lines string) {
		raw := "GET /p HTTP/1.1\r\nHost: h\r\n" + lines + "\r\n\r\n"
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7)}, nil)
		if err := ctx.Request.Header.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			return
		}
		h := &ctx.Request.Header
		hop, err := upstream.CheckFields(h.RawHeaders())
		if err != nil {
			return
		}
		var named [][]byte
		for _, v := range h.PeekAll("Connection") {
			for tok := range bytes.SplitSeq(v, []byte(",")) {
				if tok = bytes.TrimSpace(tok); len(tok) > 0 {
					named = append(named, bytes.Clone(tok))
				}
			}
		}
		upstream.RemoveHopByHop(h, hop)
		setForwarded(&ctx)
		for k := range h.All() {
			for _, hop := range upstream.HopFields {
				if strings.EqualFold(string(k), hop) && !strings.EqualFold(hop, "Transfer-Encoding") {
					t.Fatalf("hop-by-hop %s left in %q", k, raw)
				}
			}
			for _, n := range named {
				if bytes.EqualFold(k, n) && !bytes.EqualFold(n, []byte("Host")) && !bytes.EqualFold(n, []byte("X-Forwarded-For")) &&
					!bytes.EqualFold(n, []byte("X-Forwarded-Proto")) && !bytes.EqualFold(n, []byte("X-Forwarded-Host")) {
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
	})
}
