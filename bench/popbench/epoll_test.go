package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestEpollRelay sends megabytes both ways through the epoll relay over
// several connections at once, with a slow reader among them so that writes
// block part-way, and checks that each side gets exactly what the other sent,
// up to each half-close.
func TestEpollRelay(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	go epollRelayMain(listen, up.Addr().String()) // runs until the test binary exits

	toUp, toClient := randomBytes(t, 3<<20), randomBytes(t, 5<<20)
	go serveUpstream(t, up, toClient, toUp)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go relayClient(t, listen, i == 0, toUp, toClient, &wg)
	}
	wg.Wait()
}

// relayClient connects to the relay at addr, sends send and half-closes
// while it reads everything, slowly if slow, and checks it equals want.
func relayClient(t *testing.T, addr string, slow bool, send, want []byte, wg *sync.WaitGroup) {
	defer wg.Done()
	var c net.Conn
	var err error
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		if c, err = net.Dial("tcp", addr); err == nil || time.Since(start) > 5*time.Second {
			break
		}
	}
	if err != nil {
		t.Error(err)
		return
	}
	var r io.Reader = c
	if slow {
		r = slowReader{c}
	}
	exchange(t, "client", c.(*net.TCPConn), r, send, want)
}

// serveUpstream answers every connection as relayClient does, with its own
// send and want.
func serveUpstream(t *testing.T, l net.Listener, send, want []byte) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go exchange(t, "upstream", c.(*net.TCPConn), c, send, want)
	}
}

// exchange writes send to c and half-closes it while it reads r (c, or c
// slowly) to the end, checks what it read equals want, and closes c.
func exchange(t *testing.T, side string, c *net.TCPConn, r io.Reader, send, want []byte) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	written := make(chan struct{})
	go writeAndHalfClose(t, c, send, written)
	got, err := io.ReadAll(r)
	if err != nil {
		t.Error(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got %d bytes, not the %d sent", side, len(got), len(want))
	}
	<-written
}

// writeAndHalfClose writes b to c, half-closes c and closes done.
func writeAndHalfClose(t *testing.T, c *net.TCPConn, b []byte, done chan<- struct{}) {
	defer close(done)
	if _, err := c.Write(b); err != nil {
		t.Error(err)
	}
	c.CloseWrite()
}

// slowReader reads at most 4 KiB at a time with a pause, so that the relay's
// writes to it block.
type slowReader struct{ r io.Reader }

func (s slowReader) Read(p []byte) (int, error) {
	time.Sleep(100 * time.Microsecond)
	return s.r.Read(p[:min(len(p), 4<<10)])
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
