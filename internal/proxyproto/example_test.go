package proxyproto_test

import (
	"fmt"
	"net/netip"

	"github.com/popproxy/popproxy/internal/proxyproto"
)

func ExampleHeader() {
	client := netip.MustParseAddrPort("192.0.2.1:51234")
	local := netip.MustParseAddrPort("198.51.100.1:110")
	v1, _ := proxyproto.Header(1, client, local)
	v2, _ := proxyproto.Header(2, client, local)
	fmt.Printf("%q\n% x\n", v1, v2)
	// Output:
	// "PROXY TCP4 192.0.2.1 198.51.100.1 51234 110\r\n"
	// 0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a 21 11 00 0c c0 00 02 01 c6 33 64 01 c8 22 00 6e
}

func ExampleXClient() {
	// After a greeting "+OK [XCLIENT] Dovecot ready.":
	line, _ := proxyproto.XClient(netip.MustParseAddrPort("[2001:db8::7]:51234"), "k3Jd9Qx2", 4)
	fmt.Printf("%q\n", line)
	// Output:
	// "XCLIENT ADDR=2001:db8::7 PORT=51234 SESSION=k3Jd9Qx2 TTL=4\r\n"
}
