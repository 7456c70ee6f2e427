package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"fastlb/testbackends"
	"fastlb/upstream"
)

// patternCRC is the CRC-32 of n bytes of testbackends.Pattern.
func patternCRC(n int64) uint32 {
	sum := crc32.NewIEEE()
	io.Copy(sum, testbackends.Pattern(n))
	return sum.Sum32()
}

// TestStreamDownload: bodies on both sides of the stream threshold, with a
// length and chunked, arrive whole and in order.
func TestStreamDownload(t *testing.T) {
	h := startHarness(t, "", 1)
	for _, tt := range []struct {
		size    int64
		chunked bool
	}{
		{0, false}, {100, false}, {upstream.StreamThreshold, false},
		{upstream.StreamThreshold + 1, false}, {5 << 20, false},
		{100, true}, {5 << 20, true},
	} {
		t.Run(fmt.Sprintf("%d chunked=%v", tt.size, tt.chunked), func(t *testing.T) {
			path := fmt.Sprintf("/bytes/%d", tt.size)
			if tt.chunked {
				path += "?chunked=1"
			}
			resp, err := h.client.Get("http://" + h.addr + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			sum := crc32.NewIEEE()
			n, err := io.Copy(sum, resp.Body)
			if err != nil || n != tt.size || sum.Sum32() != patternCRC(tt.size) {
				t.Fatalf("got %d bytes (%v), crc %x; want %d bytes, crc %x", n, err, sum.Sum32(), tt.size, patternCRC(tt.size))
			}
			if wantCL := !tt.chunked; (resp.ContentLength == tt.size) != wantCL {
				t.Errorf("Content-Length %d, want it %v", resp.ContentLength, wantCL)
			}
		})
	}
	// The connections went back to the backend's pool: keep-alive works
	// after streamed bodies.
	if code, _ := h.get("/"); code != 200 {
		t.Errorf("after the downloads: %d", code)
	}
}

// sinkResult is what /sink answers.
type sinkResult struct {
	Bytes int64  `json:"bytes"`
	CRC32 uint32 `json:"crc32"`
}

// upload POSTs size bytes of the pattern to /sink, chunked when asked.
func (h *harness) upload(size int64, chunked bool) (int, sinkResult) {
	h.t.Helper()
	var body io.Reader = testbackends.Pattern(size)
	if chunked {
		body = struct{ io.Reader }{body} // hides the length
	}
	req, _ := http.NewRequest("POST", "http://"+h.addr+"/sink", body)
	if !chunked {
		req.ContentLength = size
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("upload of %d bytes: %v", size, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r sinkResult
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &r); err != nil {
			h.t.Fatalf("%s: %v", b, err)
		}
	}
	return resp.StatusCode, r
}

// TestStreamUpload: request bodies on both sides of the threshold, with a
// length and chunked, reach the backend whole.
func TestStreamUpload(t *testing.T) {
	h := startHarness(t, "", 1)
	for _, size := range []int64{0, 1, 8 << 10, upstream.StreamThreshold, upstream.StreamThreshold + 1, 5 << 20} {
		for _, chunked := range []bool{false, true} {
			code, r := h.upload(size, chunked)
			if code != 200 || r.Bytes != size || r.CRC32 != patternCRC(size) {
				t.Errorf("%d bytes, chunked=%v: status %d, backend got %d bytes crc %x; want crc %x",
					size, chunked, code, r.Bytes, r.CRC32, patternCRC(size))
			}
		}
	}
}

// TestStreamedUploadRetry: a streamed body goes to another backend when the
// first one cannot be reached, since none of it was sent.
func TestStreamedUploadRetry(t *testing.T) {
	h := startHarness(t, `"retries": 2, "health_check": {"fall": 100}`, 1, 1)
	h.backends[0].Close()
	for i := range 6 {
		code, r := h.upload(1<<20, i%2 == 0)
		if code != 200 || r.Bytes != 1<<20 {
			t.Fatalf("upload %d: status %d, %d bytes arrived", i, code, r.Bytes)
		}
	}
	if got := h.metric("fastlb_retries_total"); got == "0" {
		t.Error("no upload met the closed backend; the test proves nothing")
	}
}

// TestStreamMemory moves 256 MiB down and 256 MiB up through fastlb and
// measures how far the heap grows meanwhile: streaming keeps it flat.
func TestStreamMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 512 MiB")
	}
	const size = 256 << 20
	h := startHarness(t, `"max_request_body": "1GiB"`, 1)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	start := time.Now()
	resp, err := h.client.Get(fmt.Sprintf("http://%s/bytes/%d", h.addr, size))
	if err != nil {
		t.Fatal(err)
	}
	sum := crc32.NewIEEE()
	n, err := io.Copy(sum, resp.Body)
	resp.Body.Close()
	down := time.Since(start)
	if err != nil || n != size || sum.Sum32() != patternCRC(size) {
		t.Fatalf("download: %d bytes (%v)", n, err)
	}
	start = time.Now()
	code, r := h.upload(size, false)
	up := time.Since(start)
	if code != 200 || r.Bytes != size || r.CRC32 != patternCRC(size) {
		t.Fatalf("upload: status %d, %d bytes arrived", code, r.Bytes)
	}
	close(stop)
	<-sampled
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("256 MiB down in %v, up in %v; heap in use grew by at most %.1f MiB (from %.1f MiB)",
		down.Round(time.Millisecond), up.Round(time.Millisecond), float64(growth)/(1<<20), float64(base.HeapInuse)/(1<<20))
	// The client, fastlb and the backend share this process: the bound
	// covers all three.
	if growth > 64<<20 {
		t.Errorf("heap grew by %d MiB moving 256 MiB each way, want under 64", growth>>20)
	}
}

// TestBodyLimits: max_request_body holds for bodies with a length, chunked
// ones, and streamed ones, and a client that stops sending is cut off.
func TestBodyLimits(t *testing.T) {
	h := startHarness(t, `"max_request_body": "200KiB", "client_read_timeout": "300ms"`, 1)
	chunked := func(size int) string {
		var b strings.Builder
		for size > 0 {
			n := min(size, 4096)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, strings.Repeat("x", n))
			size -= n
		}
		return b.String() + "0\r\n\r\n"
	}
	tests := []struct {
		name, request string
		status        string
		closed        bool
	}{
		{"length at the limit", "POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 204800\r\n\r\n" + strings.Repeat("x", 204800), "200", false},
		{"length over the limit", "POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 204801\r\n\r\n" + strings.Repeat("x", 204801), "413", false},
		{"chunked at the limit", "POST /sink HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(204800), "200", false},
		{"chunked over the limit", "POST /sink HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(300000), "413", true},
		{"malformed chunk size", "POST /sink HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", "400", true},
		{"malformed chunk size, streamed", "POST /sink HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.TrimSuffix(chunked(100000), "0\r\n\r\n") + "zz\r\n", "400", true},
		{"body stops short", "POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly this", "408", true},
		{"streamed body stops short", "POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 150000\r\n\r\n" + strings.Repeat("x", 100000), "408", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go io.WriteString(c, tt.request)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			if !strings.HasPrefix(resp.Status, tt.status) {
				t.Errorf("status %s, want %s", resp.Status, tt.status)
			}
			// A closed connection reads EOF (or, with unread bytes left
			// behind, a reset) at once; an open one waits for the next
			// request until the deadline.
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			_, err = br.ReadByte()
			if closed := err == io.EOF || errors.Is(err, syscall.ECONNRESET); closed != tt.closed {
				t.Errorf("connection closed: %v (%v), want %v", closed, err, tt.closed)
			}
		})
	}
}

// TestSlowUpload: client_read_timeout bounds each read of a streamed body
// and backend_timeout each write of it, not the whole upload: a client that
// keeps sending, slowly, gets through, and backend_timeout for the answer
// starts once the body has gone.
func TestSlowUpload(t *testing.T) {
	h := startHarness(t, `"client_read_timeout": "500ms", "backend_timeout": "500ms"`, 1)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 200 << 10
	fmt.Fprintf(c, "POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", size)
	part := bytes.Repeat([]byte("x"), size/10)
	start := time.Now()
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		c.Write(part)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), fmt.Sprintf(`"bytes": %d`, size)) {
		t.Errorf("%s %s after %v", resp.Status, b, time.Since(start))
	}
}

// TestHeadOfLargeBody: the answer to HEAD keeps the length of the body it
// does not carry, and the connections stay usable.
func TestHeadOfLargeBody(t *testing.T) {
	h := startHarness(t, "", 1)
	for range 3 {
		resp, body := h.do("HEAD", "/bytes/1000000", "")
		if resp.StatusCode != 200 || resp.ContentLength != 1000000 || body != "" {
			t.Fatalf("HEAD: %d, Content-Length %d, body %q", resp.StatusCode, resp.ContentLength, body)
		}
		if resp, body := h.do("GET", "/bytes/10", ""); resp.StatusCode != 200 || len(body) != 10 {
			t.Fatalf("GET after HEAD: %d %q", resp.StatusCode, body)
		}
	}
}

// TestClientGoesAway: a client that vanishes in the middle of a streamed
// download or upload leaves nothing behind: the backend's in-flight count
// returns to 0 and fastlb goes on serving.
func TestClientGoesAway(t *testing.T) {
	h := startHarness(t, "", 1)
	b := h.pool.Snapshot().All[0]
	for _, request := range []string{
		"GET /bytes/100000000 HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 50000000\r\n\r\n" + strings.Repeat("x", 1<<20),
		"POST /sink HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n" + strings.Repeat("x", 1<<20) + "\r\n",
	} {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, request)
		if strings.HasPrefix(request, "GET") {
			io.ReadFull(c, make([]byte, 1<<20)) // part of the answer
		}
		waitFor(t, "the request to reach the backend", func() bool { return b.Active() == 1 })
		c.Close()
		waitFor(t, "the backend's in-flight count to return to 0", func() bool { return b.Active() == 0 })
	}
	if code, _ := h.get("/"); code != 200 {
		t.Errorf("after the clients went away: %d", code)
	}
}

// TestServerSentEvents: a chunked answer reaches the client event by event,
// as the backend flushes it, not at its end.
func TestServerSentEvents(t *testing.T) {
	h := startHarness(t, "", 1)
	start := time.Now()
	resp, err := h.client.Get("http://" + h.addr + "/drip/5/200ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	firstAt := time.Since(start)
	if err != nil || first != "data: 0\n" {
		t.Fatalf("first event %q, %v", first, err)
	}
	rest, err := io.ReadAll(br)
	total := time.Since(start)
	if err != nil || strings.Count(string(rest), "data: ") != 4 {
		t.Fatalf("the other events: %q, %v", rest, err)
	}
	// The backend spends 800 ms between the first event and the last.
	if firstAt > total-500*time.Millisecond {
		t.Errorf("first event after %v, all after %v: the events were held back", firstAt, total)
	}
	t.Logf("first event after %v, last after %v", firstAt.Round(time.Millisecond), total.Round(time.Millisecond))
}
