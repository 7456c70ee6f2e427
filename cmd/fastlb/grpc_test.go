package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"fastlb/testbackends"
)

// gRPC through fastlb to an h2c backend: a unary call, a call whose
// status comes in trailers only, and a server stream whose messages arrive
// as they are sent; an HTTP/1.1 client's request to an HTTP/2 backend; the
// backends' HTTP health checks over HTTP/2.
func TestGRPCThroughH2C(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	defer gs.Stop()

	// An HTTP/2 (h2c) backend that says which protocol it was asked in,
	// and sends a trailer.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP1(true)
	h2srv := &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/h2/trailers" { // what came, the request's trailers included
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%q sum=%q", b, r.Trailer.Get("X-Sum"))
			return
		}
		w.Header().Set("Trailer", "X-Checksum")
		fmt.Fprintf(w, "%s %s te=%q", r.Proto, r.URL.Path, r.Header.Get("Te"))
		w.Header().Set("X-Checksum", "42")
	})}
	hln, _ := net.Listen("tcp4", "127.0.0.1:0")
	go h2srv.Serve(hln)
	defer h2srv.Close()

	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	proc, addr, client := startH2(t, "", fmt.Sprintf(`,
	  "pools": {"grpc": {"backends": ["h2c://%s"]},
	            "web2": {"backends": ["h2c://%s"], "health_check_method": "http", "health_check": {"path": "/health"}}},
	  "routes": [{"path_prefix": "/grpc.health.v1.Health/", "pool": "grpc"}, {"path_prefix": "/h2/", "pool": "web2"}]`,
		ln.Addr(), hln.Addr()), a)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary call: %v %v", resp, err)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("a trailers-only error: %v", err)
	}
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	seen := map[healthpb.HealthCheckResponse_ServingStatus]bool{}
	for len(seen) < 2 {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("stream: %v (seen %v)", err, seen)
		}
		seen[m.Status] = true
		if m.Status == healthpb.HealthCheckResponse_SERVING {
			// The next message is sent only now: it must come through
			// while the stream stays open.
			hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
		}
	}

	// HTTP/2 to the client and to the backend: trailers pass; TE: trailers
	// goes on.
	req, _ := http.NewRequest("GET", "https://"+addr+"/h2/x", nil)
	req.Header.Set("TE", "trailers")
	r, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if string(body) != `HTTP/2.0 /h2/x te="trailers"` || r.Trailer.Get("X-Checksum") != "42" {
		t.Errorf("h2 to h2c: %q, trailers %v", body, r.Trailer)
	}
	// The request's trailers go on too, after its body (short or long).
	for _, size := range []int{5, 300 << 10} {
		sent := strings.Repeat("x", size)
		req, _ = http.NewRequest("POST", "https://"+addr+"/h2/trailers", strings.NewReader(sent))
		req.Trailer = http.Header{"X-Sum": {"7"}}
		r, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(r.Body)
		r.Body.Close()
		if want := fmt.Sprintf("%q sum=%q", sent, "7"); string(body) != want {
			t.Errorf("request trailers, %d bytes: got %.80q, want %.80q", size, body, want)
		}
	}
	// An HTTP/1.1 client's request, translated both ways; no TE forwarded.
	code, b1 := get(t, "http://"+proc.addr+"/h2/y")
	if code != 200 || b1 != `HTTP/2.0 /h2/y te=""` {
		t.Errorf("HTTP/1.1 to h2c: %d %q", code, b1)
	}
	// The health checks of the h2c backend passed over HTTP/2.
	_, pools := get(t, "http://"+proc.adminAddr+"/api/v1/pools/web2")
	if !strings.Contains(pools, `"healthy": 1`) {
		t.Errorf("the h2c backend's HTTP health check: %s", pools)
	}
}
