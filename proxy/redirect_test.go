package proxy

import (
	"bufio"
	"bytes"
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestRedirect(t *testing.T) {
	tests := []struct {
		port     int
		request  string
		status   int
		location string
	}{
		{8443, "GET /a/b?c=1 HTTP/1.1\r\nHost: shop.example:8080\r\n\r\n", 308, "https://shop.example:8443/a/b?c=1"},
		{443, "GET /a%2Fb?x=%20 HTTP/1.1\r\nHost: shop.example\r\n\r\n", 308, "https://shop.example/a%2Fb?x=%20"},
		{443, "POST /form HTTP/1.1\r\nHost: 10.0.0.1:80\r\nContent-Length: 0\r\n\r\n", 308, "https://10.0.0.1/form"},
		{8443, "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 308, "https://[::1]:8443/"},
		{443, "GET http://shop.example/x?y HTTP/1.1\r\nHost: shop.example\r\n\r\n", 308, "https://shop.example/x?y"},
		{443, "GET / HTTP/1.0\r\n\r\n", 400, ""},
	}
	for _, tt := range tests {
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1)}, nil)
		if err := ctx.Request.Read(bufio.NewReader(bytes.NewReader([]byte(tt.request)))); err != nil {
			t.Fatalf("%q: %v", tt.request, err)
		}
		Redirect(tt.port)(&ctx)
		if got := ctx.Response.StatusCode(); got != tt.status {
			t.Errorf("%q: status %d, want %d", tt.request, got, tt.status)
		}
		if got := string(ctx.Response.Header.Peek("Location")); got != tt.location {
			t.Errorf("%q: Location %q, want %q", tt.request, got, tt.location)
		}
	}
}
