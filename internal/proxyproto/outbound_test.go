package proxyproto

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
	"testing"

	pp "github.com/pires/go-proxyproto"
)

func TestHeader(t *testing.T) {
	tests := []struct {
		version       int
		client, local string
		proto         pp.AddressFamilyAndProtocol
		src, dst      string // as parsed back
		v1            string // exact v1 text, if version 1
		wantLen       int
	}{
		{version: 1, client: "192.0.2.1:51234", local: "198.51.100.1:110", proto: pp.TCPv4,
			src: "192.0.2.1:51234", dst: "198.51.100.1:110", v1: "PROXY TCP4 192.0.2.1 198.51.100.1 51234 110\r\n"},
		{version: 1, client: "[2001:db8::1]:51234", local: "[2001:db8::2]:995", proto: pp.TCPv6,
			src: "[2001:db8::1]:51234", dst: "[2001:db8::2]:995", v1: "PROXY TCP6 2001:db8::1 2001:db8::2 51234 995\r\n"},
		{version: 1, client: "[::ffff:192.0.2.1]:1", local: "[::ffff:198.51.100.1]:110", proto: pp.TCPv4,
			src: "192.0.2.1:1", dst: "198.51.100.1:110", v1: "PROXY TCP4 192.0.2.1 198.51.100.1 1 110\r\n"},
		{version: 1, client: "[fe80::1%eth0]:1", local: "[fe80::2%eth0]:110", proto: pp.TCPv6,
			src: "[fe80::1]:1", dst: "[fe80::2]:110", v1: "PROXY TCP6 fe80::1 fe80::2 1 110\r\n"},
		{version: 2, client: "192.0.2.1:51234", local: "198.51.100.1:110", proto: pp.TCPv4,
			src: "192.0.2.1:51234", dst: "198.51.100.1:110", wantLen: 16 + 12},
		{version: 2, client: "[2001:db8::1]:51234", local: "[2001:db8::2]:995", proto: pp.TCPv6,
			src: "[2001:db8::1]:51234", dst: "[2001:db8::2]:995", wantLen: 16 + 36},
	}
	for _, tt := range tests {
		b, err := Header(tt.version, netip.MustParseAddrPort(tt.client), netip.MustParseAddrPort(tt.local))
		if err != nil {
			t.Errorf("Header(%d, %s, %s): %v", tt.version, tt.client, tt.local, err)
			continue
		}
		if tt.v1 != "" && string(b) != tt.v1 {
			t.Errorf("Header(1, %s, %s) = %q, want %q", tt.client, tt.local, b, tt.v1)
		}
		if tt.wantLen != 0 && (len(b) != tt.wantLen || !bytes.HasPrefix(b, pp.SIGV2)) {
			t.Errorf("Header(2, %s, %s) = %d bytes %x", tt.client, tt.local, len(b), b)
		}

		// Round trip through the library's parser, with data after it.
		br := bufio.NewReader(bytes.NewReader(append(b, "USER x\r\n"...)))
		h, err := pp.Read(br)
		if err != nil {
			t.Errorf("parsing Header(%d, %s, %s): %v", tt.version, tt.client, tt.local, err)
			continue
		}
		if int(h.Version) != tt.version || h.Command != pp.PROXY || h.TransportProtocol != tt.proto ||
			h.SourceAddr.String() != tt.src || h.DestinationAddr.String() != tt.dst {
			t.Errorf("Header(%d, %s, %s) parsed as %+v", tt.version, tt.client, tt.local, h)
		}
		if rest, _ := br.ReadString('\n'); rest != "USER x\r\n" {
			t.Errorf("after the header: %q", rest)
		}
	}
}

func TestHeaderErrors(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("[2001:db8::1]:1")
	tests := []struct {
		name          string
		version       int
		client, local netip.AddrPort
	}{
		{"version 0", 0, v4, v4},
		{"version 3", 3, v4, v4},
		{"no client", 1, netip.AddrPort{}, v4},
		{"no local", 2, v4, netip.AddrPort{}},
		{"mixed families v1", 1, v4, v6},
		{"mixed families v2", 2, v6, v4},
	}
	for _, tt := range tests {
		if b, err := Header(tt.version, tt.client, tt.local); err == nil {
			t.Errorf("%s: Header = %q, want an error", tt.name, b)
		}
	}
}

func TestXClient(t *testing.T) {
	tests := []struct {
		client  string
		session string
		ttl     int
		want    string
	}{
		{"192.0.2.1:51234", "a1B2c3", 4, "XCLIENT ADDR=192.0.2.1 PORT=51234 SESSION=a1B2c3 TTL=4\r\n"},
		{"[2001:db8::1]:995", "S", 0, "XCLIENT ADDR=2001:db8::1 PORT=995 SESSION=S TTL=0\r\n"},
		{"[::ffff:192.0.2.1]:1", "x", 5, "XCLIENT ADDR=192.0.2.1 PORT=1 SESSION=x TTL=5\r\n"},
		{"[fe80::1%eth0]:1", "x", 5, "XCLIENT ADDR=fe80::1 PORT=1 SESSION=x TTL=5\r\n"},
		{"192.0.2.1:1", strings.Repeat("z", 64), 1, "XCLIENT ADDR=192.0.2.1 PORT=1 SESSION=" + strings.Repeat("z", 64) + " TTL=1\r\n"},
	}
	for _, tt := range tests {
		got, err := XClient(netip.MustParseAddrPort(tt.client), tt.session, tt.ttl)
		if err != nil || got != tt.want {
			t.Errorf("XClient(%s, %q, %d) = %q, %v; want %q", tt.client, tt.session, tt.ttl, got, err, tt.want)
		}
	}

	ok := netip.MustParseAddrPort("192.0.2.1:1")
	bad := []struct {
		name    string
		client  netip.AddrPort
		session string
		ttl     int
	}{
		{"no client", netip.AddrPort{}, "x", 1},
		{"empty session", ok, "", 1},
		{"session with space", ok, "a b", 1},
		{"session with CRLF", ok, "a\r\nPASS x", 1},
		{"session with =", ok, "a=b", 1},
		{"session with dash", ok, "a-b", 1},
		{"session non-ASCII", ok, "é", 1},
		{"session too long", ok, strings.Repeat("z", 65), 1},
		{"negative TTL", ok, "x", -1},
	}
	for _, tt := range bad {
		if got, err := XClient(tt.client, tt.session, tt.ttl); err == nil {
			t.Errorf("%s: XClient = %q, want an error", tt.name, got)
		}
	}
}
