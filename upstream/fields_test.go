package upstream

import (
	"bufio"
	"strings"
	"testing"
)

func TestCheckFields(t *testing.T) {
	tests := []struct {
		name, raw string
		hop       Hop
		want      error
	}{
		{"plain", "Host: a\r\nContent-Length: 5\r\n\r\n", 0, nil},
		{"bare LF", "Host: a\nX-A: b\n\n", 0, nil},
		{"empty", "", 0, nil},
		{"value with spaces and colons", "X-Time: 12:00:01 \r\n", 0, nil},
		{"connection", "Host: a\r\nConnection: keep-alive\r\n", 1 << 0, nil},
		{"te in lower case", "te: trailers\r\n", 1 << 5, nil},
		{"proxy-authorization", "PROXY-AUTHORIZATION: x\r\nConnection: close\r\n", 1<<4 | 1<<0, nil},
		{"chunked", "Transfer-Encoding: chunked\r\n", 1 << 7, nil},
		{"a name like a hop field", "Upgrades: 1\r\nTE2: x\r\n", 0, nil},
		{"length then coding", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 0, errFraming},
		{"coding then length", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 0, errFraming},
		{"any case", "content-length: 5\r\nTRANSFER-ENCODING: chunked\r\n", 0, errFraming},
		{"two lengths are the parser's", "Content-Length: 5\r\nContent-Length: 5\r\n", 0, nil},
		{"fold with space", "X-A: b\r\n c\r\n", 0, errObsFold},
		{"fold with tab", "X-A: b\r\n\tc\r\n", 0, errObsFold},
		{"space before colon", "Content-Length : 5\r\n", 0, errHeaderName},
		{"separator in name", "X(A): 1\r\n", 0, errHeaderName},
		{"empty name", ": 1\r\n", 0, errHeaderName},
		{"no colon", "X-A\r\n", 0, errHeaderName},
		{"NUL in name", "X\x00A: 1\r\n", 0, errHeaderName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hop, err := CheckFields([]byte(tt.raw))
			if hop != tt.hop || err != tt.want {
				t.Errorf("CheckFields(%q) = %v, %v; want %v, %v", tt.raw, hop, err, tt.hop, tt.want)
			}
		})
	}
}

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
