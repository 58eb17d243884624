package proxyproto

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	pp "github.com/pires/go-proxyproto"
)

// maxSessionLen is Dovecot's LOGIN_MAX_SESSION_ID_LEN: a longer SESSION is
// ignored by the backend.
const maxSessionLen = 64

// Header returns the PROXY protocol header announcing a TCP connection from
// client to local (the address the client connected to on the proxy), to be
// written first on a new upstream connection, before its greeting is read.
// version 1 gives the text form ("PROXY TCP4 192.0.2.1 198.51.100.1 5000
// 110\r\n"), version 2 the binary form. Zones are dropped and IPv4-mapped
// IPv6 addresses are written as IPv4; the two addresses must then be of the
// same family, as they are for the two ends of one TCP connection.
func Header(version int, client, local netip.AddrPort) ([]byte, error) {
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("proxyproto: version %d is not 1 or 2", version)
	}
	if !client.IsValid() || !local.IsValid() {
		return nil, errors.New("proxyproto: header needs a client and a local address")
	}
	src := netip.AddrPortFrom(client.Addr().WithZone("").Unmap(), client.Port())
	dst := netip.AddrPortFrom(local.Addr().WithZone("").Unmap(), local.Port())
	var proto pp.AddressFamilyAndProtocol
	switch {
	case src.Addr().Is4() && dst.Addr().Is4():
		proto = pp.TCPv4
	case src.Addr().Is6() && dst.Addr().Is6():
		proto = pp.TCPv6
	default:
		return nil, fmt.Errorf("proxyproto: client %s and local %s are not of one address family", src, dst)
	}
	h := &pp.Header{
		Version:           byte(version),
		Command:           pp.PROXY,
		TransportProtocol: proto,
		SourceAddr:        net.TCPAddrFromAddrPort(src),
		DestinationAddr:   net.TCPAddrFromAddrPort(dst),
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("proxyproto: %w", err)
	}
	return b, nil
}

// XClient returns Dovecot's POP3 XCLIENT command telling the upstream the
// client's address and port, the proxy's session id (for the upstream's
// log) and the proxy TTL, CRLF included:
//
//	XCLIENT ADDR=192.0.2.1 PORT=51234 SESSION=a1B2c3 TTL=4\r\n
//
// This is the line Dovecot's own pop3-login proxy sends (pop3-proxy.c). The
// session id must be 1..64 characters of [A-Za-z0-9]; ttl must be >= 0.
// Dovecot refuses to proxy further when the TTL it is given is 1 or less
// ("Proxying loops"), so pass the hops left (Dovecot starts at 5 and sends
// one less).
//
// Send it only when the greeting carries the response code [XCLIENT], which
// Dovecot gives only to peers in its login_trusted_networks (to others it
// answers XCLIENT "+OK ... ignoring"); on -ERR, close the upstream
// connection without sending credentials.
func XClient(client netip.AddrPort, session string, ttl int) (string, error) {
	if !client.IsValid() {
		return "", errors.New("proxyproto: XCLIENT needs the client's address")
	}
	if session == "" || len(session) > maxSessionLen || strings.ContainsFunc(session, notAlnum) {
		return "", fmt.Errorf("proxyproto: XCLIENT session id must be 1..%d characters of [A-Za-z0-9]", maxSessionLen)
	}
	if ttl < 0 {
		return "", fmt.Errorf("proxyproto: XCLIENT TTL %d is negative", ttl)
	}
	addr := client.Addr().WithZone("").Unmap()
	return fmt.Sprintf("XCLIENT ADDR=%s PORT=%d SESSION=%s TTL=%d\r\n", addr, client.Port(), session, ttl), nil
}

func notAlnum(c rune) bool {
	return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9')
}
