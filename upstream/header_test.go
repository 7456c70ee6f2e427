package upstream

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"fastlb/internal/header"
)

func TestPeekHeader(t *testing.T) {
	tests := []struct {
		name, in, want string
		bufSize        int
	}{
		{"CRLF", "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\nbody", "A: 1\r\nB: 2\r\n", 4096},
		{"bare LF", "HTTP/1.1 200 OK\nA: 1\n\nbody", "A: 1\n", 4096},
		{"no fields", "HTTP/1.1 204 No Content\r\n\r\n", "", 4096},
		{"blank lines in the body", "HTTP/1.1 200 OK\r\nA: 1\r\n\r\nx\n\ny\r\n\r\n", "A: 1\r\n", 4096},
		{"bare LF, CRLFs in the body", "HTTP/1.1 200 OK\nA: 1\n\nx\r\n\r\n", "A: 1\n", 4096},
		{"cut short", "HTTP/1.1 200 OK\r\nA: 1\r\n", "", 4096},
		{"larger than the buffer", "HTTP/1.1 200 OK\r\nA: " + strings.Repeat("x", 100) + "\r\n\r\n", "", 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), tt.bufSize)
			if got := string(peekHeader(br)); got != tt.want {
				t.Errorf("peekHeader = %q, want %q", got, tt.want)
			}
			if br.Buffered() > 0 {
				if b, _ := br.Peek(1); b[0] != tt.in[0] {
					t.Error("peekHeader consumed input")
				}
			}
		})
	}
}

// FuzzResponseHeader feeds arbitrary header lines through the transport's
// reading of a response header: nothing may panic, and a header it accepts
// leaves, once stripped as the transport strips it, with no hop-by-hop
// field and none that Connection named.
func FuzzResponseHeader(f *testing.F) {
	f.Add("Content-Length: 5\r\nConnection: close, X-A\r\nX-A: 1")
	f.Add("Transfer-Encoding: chunked\r\nTE: x\r\nKeep-Alive: 5\r\nTrailer: X-T")
	f.Add("X-A: 1\r\n b")
	f.Add("Proxy-Authenticate: Basic\r\nUPGRADE: h2c\r\nconnection: upgrade")
	f.Fuzz(func(t *testing.T, lines string) {
		raw := "HTTP/1.1 200 OK\r\n" + lines + "\r\n\r\n"
		var h fasthttp.ResponseHeader
		hop, err := ReadResponseHeader(bufio.NewReaderSize(strings.NewReader(raw), 64<<10), &h)
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
		header.RemoveHopByHop(&h, hop)
		h.ResetConnectionClose()
		for k := range h.All() {
			for _, f := range header.HopFields {
				// fasthttp manages Transfer-Encoding itself: it is
				// never among the fields it lists.
				if strings.EqualFold(string(k), f) {
					t.Fatalf("hop-by-hop %s left in %q", k, raw)
				}
			}
			for _, n := range named {
				if bytes.EqualFold(k, n) && !bytes.EqualFold(n, []byte("Host")) {
					t.Fatalf("%s named in Connection left in %q", k, raw)
				}
			}
		}
	})
}
