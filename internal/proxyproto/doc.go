// Package proxyproto carries the client's address across proxies, in both
// directions: it reads the HAProxy PROXY protocol header (v1 and v2) that a
// trusted load balancer puts in front of each connection, and it writes a
// PROXY header or a Dovecot XCLIENT command for the upstream server.
// Parsing and formatting are github.com/pires/go-proxyproto's; this package
// adds the policy.
//
// Inbound, a [Listener] requires the header from trusted networks and
// refuses every other connection. Its Accept returns only connections whose
// header has already been read and checked, so the proxy cannot greet a
// client whose header is missing or bad, and RemoteAddr never blocks: it can
// be used for rate limits in the accept loop. Headers are read in a goroutine
// per connection, each bounded by the timeout, so a load balancer that is
// slow to send one header delays nobody else.
//
// Typical usage:
//
//	trusted, err := ratelimit.ParseNetworks([]string{"10.1.2.0/24"}) // the load balancers
//	ln, err := net.Listen("tcp", ":110")
//	ln = proxyproto.Listen(ln, trusted, 5*time.Second)
//	ln = tls.NewListener(ln, tlsConfig) // for port 995: the header comes before the ClientHello
//	for {
//		conn, err := ln.Accept() // conn.RemoteAddr() is the real client
//		...
//	}
//
//	// Toward the upstream, after a greeting with the code [XCLIENT]:
//	line, err := proxyproto.XClient(client, sessionID, 4)
//	// send line, expect +OK, else abort without sending credentials
//	// or, for a PROXY-aware upstream, before reading its greeting:
//	hdr, err := proxyproto.Header(2, client, local)
//	// write hdr first on the new upstream connection
package proxyproto
