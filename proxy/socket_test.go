package proxy

import (
	"io"
	"net"
	"testing"

	"fastlb/upstream"
)

// SocketListener hands out its listener's connections as upstream.Sockets,
// which carry the bytes both ways and close the connection.
func TestSocketListener(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := SocketListener(tcp)
	defer ln.Close()
	client, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*upstream.Socket); !ok {
		t.Fatalf("Accept gave a %T, want *upstream.Socket", c)
	}
	if c.RemoteAddr().String() != client.LocalAddr().String() {
		t.Errorf("RemoteAddr %v, want the client's %v", c.RemoteAddr(), client.LocalAddr())
	}
	client.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v", buf, err)
	}
	c.Write([]byte("world"))
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "world" {
		t.Fatalf("client read %q, %v", buf, err)
	}
	c.Close()
	if n, err := client.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("client read after Close = %d, %v; want EOF", n, err)
	}
	tcp.Close()
	if _, err := ln.Accept(); err == nil {
		t.Fatal("Accept on a closed listener succeeded")
	}
}
