package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"fastlb/testbackends"
)

// startH2 runs fastlb with an HTTPS listener in front of backends and
// returns it with its HTTPS address and an HTTP/2 client.
func startH2(t *testing.T, extraTLS, extra string, backends ...*testbackends.Server) (*process, string, *http.Client) {
	t.Helper()
	p := newPKI(t)
	c, k := p.issue(t, "h2", "127.0.0.1", "api.example.com")
	tlsPort := freePort(t)
	proc := startBinary(t, fmt.Sprintf(`, "tls": {"port": %d, "bind": "127.0.0.1", "certificates": [{"cert_file": %q, "key_file": %q}]%s}%s`,
		tlsPort, c, k, extraTLS, extra), backends...)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	t.Cleanup(client.CloseIdleConnections)
	return proc, fmt.Sprintf("127.0.0.1:%d", tlsPort), client
}

func TestHTTP2(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	api, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "api"})
	defer api.Close()
	proc, addr, client := startH2(t, "", fmt.Sprintf(`, "max_request_body": "40MiB", "access_log": "stderr",
	  "pools": {"api": {"backends": [%q]}}, "routes": [{"host": "api.example.com", "pool": "api"}]`, api.URL()), a)

	// A request over HTTP/2 takes the HTTP/1.1 path to the backend, with
	// the forwarding headers and :authority as Host.
	req, _ := http.NewRequest("GET", "https://"+addr+"/echo?q=1", nil)
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 {
		t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
	}
	var e testbackends.Echo
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("%q: %v", body, err)
	}
	headers := map[string]string{}
	for _, kv := range e.Headers {
		headers[kv[0]] = kv[1]
	}
	if e.Proto != "HTTP/1.1" || e.URI != "/echo?q=1" || headers["Host"] != addr || headers["X-Forwarded-Proto"] != "https" ||
		headers["X-Forwarded-For"] != "127.0.0.1" || headers["X-Request-Id"] == "" || headers["Cookie"] != "a=1; b=2" {
		t.Errorf("the backend got %s %s %v", e.Proto, e.URI, headers)
	}
	// Routing by :authority.
	resp, err = client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ = http.NewRequest("GET", "https://"+addr+"/", nil)
	req.Host = "api.example.com"
	if resp, err = client.Do(req); err != nil || resp.Header.Get("X-Backend") != "api" {
		t.Fatalf("routing by :authority: %v %v", err, resp.Header)
	}
	resp.Body.Close()

	// 32 MiB each way, streamed: fastlb's peak memory grows by far less.
	hwm := func() int64 {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", proc.cmd.Process.Pid))
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				return n
			}
		}
		return 0
	}
	before := hwm()
	const size = 32 << 20
	upload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	resp, err = client.Post("https://"+addr+"/sink", "application/octet-stream", io.NopCloser(bytes.NewReader(upload)))
	if err != nil {
		t.Fatal(err)
	}
	var sink struct {
		Bytes int64  `json:"bytes"`
		CRC32 uint32 `json:"crc32"`
	}
	json.NewDecoder(resp.Body).Decode(&sink)
	resp.Body.Close()
	if sink.Bytes != size || sink.CRC32 != crc32.ChecksumIEEE(upload) {
		t.Errorf("upload: %d bytes, crc %x", sink.Bytes, sink.CRC32)
	}
	resp, err = client.Get("https://" + addr + "/bytes/" + strconv.Itoa(size))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != size || resp.Proto != "HTTP/2.0" {
		t.Errorf("download: %d bytes over %s", n, resp.Proto)
	}
	t.Logf("peak RSS %d kB before, %d kB after moving 32 MiB each way", before, hwm())
	// A streamed answer arrives as it is sent: the first event long before
	// the last is written.
	start := time.Now()
	resp, err = client.Get("https://" + addr + "/drip/3/400ms")
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	first := time.Since(start)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || line != "data: 0\n" || first > 600*time.Millisecond || time.Since(start) < 800*time.Millisecond {
		t.Errorf("streamed answer: first line %q after %v, all after %v", line, first, time.Since(start))
	}

	// Over the limits: 413, and 431 for a header list over max_header_bytes.
	resp, err = client.Post("https://"+addr+"/sink", "application/octet-stream", io.NopCloser(bytes.NewReader(make([]byte, 41<<20))))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("a body over max_request_body: %d", resp.StatusCode)
		}
	}
	// The header list limit is max_header_bytes (16 KiB), advertised in
	// SETTINGS: Go's client does not even send a longer one.
	req, _ = http.NewRequest("GET", "https://"+addr+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("x", 12<<10))
	if resp, err = client.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("a header list under max_header_bytes: %v", err)
	} else {
		resp.Body.Close()
	}
	req.Header.Set("X-Big", strings.Repeat("x", 20<<10))
	if resp, err = client.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 431 {
			t.Errorf("a header list over max_header_bytes: %d", resp.StatusCode)
		}
	} else if !strings.Contains(err.Error(), "larger than peer's advertised limit") {
		t.Errorf("a header list over max_header_bytes: %v", err)
	}
	if !strings.Contains(proc.Logs(), `"proto":"HTTP/2.0"`) {
		t.Errorf("the access log does not say HTTP/2.0")
	}
	_, metrics := get(t, "http://"+proc.adminAddr+"/metrics")
	for _, m := range []string{"fastlb_http2_connections 1", "fastlb_http2_streams 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %q", m)
		}
	}
}

// With tls.http2 false only http/1.1 is offered.
func TestHTTP2Off(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	_, addr, client := startH2(t, `, "http2": false`, "", a)
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/1.1" {
		t.Errorf("negotiated %s", resp.Proto)
	}
}

// SIGTERM during an HTTP/2 request: the stream finishes, the connection
// gets GOAWAY.
func TestHTTP2GracefulShutdown(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	proc, addr, client := startH2(t, "", `, "shutdown_timeout": "10s"`, a)
	done := make(chan error, 1)
	go func() {
		resp, err := client.Get("https://" + addr + "/delay/1s")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	proc.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-done; err != nil {
		t.Errorf("the stream in flight failed: %v", err)
	}
	select {
	case <-proc.done:
	case <-time.After(10 * time.Second):
		t.Error("fastlb did not stop")
	}
}

// A burst of streams each reset as soon as opened (rapid reset): the
// server ends the connection rather than serving them all, and serves a
// new one.
func TestHTTP2RapidReset(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	proc, addr, client := startH2(t, "", "", a)
	c := dialH2(t, addr)
	fr, rd := http2.NewFramer(c, nil), http2.NewFramer(nil, c) // one writes, the other reads
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", addr}, {":path", "/delay/200ms"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	const streams = 5000
	written := make(chan struct{})
	go func() {
		defer close(written)
		for i := range streams {
			id := uint32(2*i + 1)
			if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}) != nil {
				return
			}
			if fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return
			}
		}
	}()
	go func() {
		<-written
		c.SetReadDeadline(time.Now().Add(3 * time.Second)) // what the server has to say about the burst
	}()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var goAway *http2.GoAwayFrame
	for goAway == nil {
		f, err := rd.ReadFrame()
		if err != nil {
			break
		}
		goAway, _ = f.(*http2.GoAwayFrame)
	}
	// Bounded either way: the server ended the connection (GOAWAY
	// ENHANCE_YOUR_CALM, Go's answer once resets outrun the streams it
	// serves), or it served the streams as they came and reset, so that
	// most never reached a backend.
	if goAway != nil && goAway.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v", goAway.ErrCode)
	}
	got := a.Requests()
	if got >= streams/2 {
		t.Errorf("the backend got %d of %d reset requests", got, streams)
	}
	t.Logf("GOAWAY: %v; the backend got %d of %d reset streams", goAway != nil, got, streams)
	resp, err := client.Get("https://" + addr + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a new connection after the burst: %v", err)
	}
	resp.Body.Close()
	if _, m := get(t, "http://"+proc.adminAddr+"/metrics"); goAway != nil && !strings.Contains(m, "fastlb_http2_errors_total") {
		t.Errorf("the reset burst is not counted")
	}
}

// dialH2 opens a TLS connection that chose h2 and sends the client
// preface; frames are the test's to write. Closed when the test ends.
func dialH2(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Write([]byte(http2.ClientPreface))
	return c
}

// fastlb advertises the protocol's default frame size, 16 KiB, and ends a
// connection that sends a larger frame with FRAME_SIZE_ERROR (RFC 9113
// section 4.2) rather than reading it.
func TestHTTP2FrameSize(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	_, addr, _ := startH2(t, "", "", a)
	c := dialH2(t, addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	settings, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	if v, ok := settings.Value(http2.SettingMaxFrameSize); ok && v != 16<<10 {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE %d, want 16384 (or absent: the default)", v)
	}
	// A HEADERS frame of 16 KiB + 1: a header block with one long value.
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, h := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", addr}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	pad := make([]byte, 24<<10) // random, so that its Huffman code stays long
	rand.Read(pad)
	enc.WriteField(hpack.HeaderField{Name: "x-pad", Value: base64.StdEncoding.EncodeToString(pad)})
	block := hb.Bytes()[:16<<10+1]
	fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndStream|http2.FlagHeadersEndHeaders, 1, block)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeFrameSize {
				t.Errorf("GOAWAY %v, want FRAME_SIZE_ERROR", g.ErrCode)
			}
			return
		}
		if _, ok := f.(*http2.DataFrame); ok {
			t.Fatal("the oversized frame was served")
		}
	}
}
