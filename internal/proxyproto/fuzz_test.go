package proxyproto

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	pp "github.com/pires/go-proxyproto"
)

// FuzzReadHeader feeds arbitrary bytes, in two pieces, to the header reader
// and checks that a connection it accepts has a TCP address (or is LOCAL)
// and passes on exactly the bytes that followed the header, and that a v1
// header it accepts was at most 107 bytes and ended in CRLF.
func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.1 51234 110\r\nCAPA\r\n"), 7)
	f.Add([]byte("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"), 0)
	f.Add([]byte("PROXY UNKNOWN\r\nQUIT\r\n"), 3)
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), 100)
	f.Add([]byte("CAPA\r\n"), 2)
	h := &pp.Header{Version: 2, Command: pp.PROXY, TransportProtocol: pp.TCPv4,
		SourceAddr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}, DestinationAddr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 2}}
	v2, _ := h.Format()
	f.Add(append(v2, "USER x\r\n"...), 13)
	f.Add(append(append([]byte(nil), pp.SIGV2...), 0x20, 0x00, 0x00, 0x00), 12)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		if len(data) > 8192 {
			return
		}
		cut = min(max(cut, 0), len(data))
		server, client := net.Pipe()
		defer server.Close()
		go func() {
			client.Write(data[:cut])
			client.Write(data[cut:])
			client.Close()
		}()
		c, err := readHeader(server, time.Second)
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(c)
		if !bytes.HasSuffix(data, rest) {
			t.Fatalf("passed on %q, not a suffix of %q", rest, data)
		}
		header := data[:len(data)-len(rest)]
		switch {
		case bytes.HasPrefix(header, []byte("PROXY")):
			if len(header) > maxV1Len || !bytes.HasSuffix(header, []byte("\r\n")) {
				t.Fatalf("accepted v1 header %q", header)
			}
		case !bytes.HasPrefix(header, pp.SIGV2):
			t.Fatalf("accepted %q as a header", header)
		}
		if c.Header().Command.IsLocal() {
			return
		}
		if _, ok := c.RemoteAddr().(*net.TCPAddr); !ok {
			t.Fatalf("remote address %#v", c.RemoteAddr())
		}
		if _, ok := c.LocalAddr().(*net.TCPAddr); !ok {
			t.Fatalf("local address %#v", c.LocalAddr())
		}
	})
}
