package header

import (
	"testing"
)

func TestCheckFields(t *testing.T) {
	tests := []struct {
		name, raw string
		hop       Fields
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
		{"forwarding fields in any case", "x-forwarded-for: a\r\nX-Forwarded-Proto: b\r\nX-FORWARDED-HOST: c\r\nX-Request-ID: d\r\n",
			FieldXForwardedFor | FieldXForwardedHost | FieldXRequestID, nil},
		{"names like forwarding fields", "X-Forwarded-Fox: 1\r\nX-Request-Ids: 2\r\nForwarded: for=x\r\n", 0, nil},
		{"hop and forwarding fields", "Connection: X-Request-Id\r\nX-Request-Id: 1\r\n", 1<<0 | FieldXRequestID, nil},
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

func TestHopBitsName(t *testing.T) {
	for bit, name := range map[Fields]string{hopConnection: "Connection", hopTransferEncoding: "Transfer-Encoding"} {
		if got := fieldBit([]byte(name)); got != bit {
			t.Errorf("bit of %s = %b, want %b", name, got, bit)
		}
	}
}
