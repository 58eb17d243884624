package proxy

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/popproxy/popproxy/internal/pop3"
)

// handshakeFailures turn crypto/tls's errors, which name the symptom ("bad
// record MAC"), into what an admin can act on. crypto/tls exports no type for
// alerts received, so its stable messages are matched.
var handshakeFailures = []struct{ in, detail string }{
	{"unknown certificate authority", "client rejected our certificate (unknown CA)"},
	{"certificate expired", "client rejected our certificate (expired)"},
	{"remote error: tls: bad certificate", "client rejected our certificate"},
	{"certificate unknown", "client rejected our certificate"},
	{"unsupported versions", "client offers only TLS versions below tls.min_version"},
	{"protocol version not supported", "no TLS version in common with the client"},
	{"no cipher suite supported", "no cipher suite in common with the client"},
	{"no ECDHE curve", "no key exchange group in common with the client"},
	{"does not look like a TLS handshake", "client sent plaintext to a TLS port"},
	{"unsupported SSLv2", "client sent an SSLv2 handshake"},
	{"unsupported application protocols", "client asked for an ALPN protocol other than pop3 (cross-protocol attack?)"},
	{"bad record MAC", "corrupted TLS record (a middlebox, or a client that gave up on the handshake)"},
}

// describeHandshakeError says why a TLS handshake with a client failed, in
// words an admin can act on.
func describeHandshakeError(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "client did not complete the handshake in time"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return "client closed the connection during the handshake"
	}
	msg := err.Error()
	for _, f := range handshakeFailures {
		if strings.Contains(msg, f.in) {
			return f.detail
		}
	}
	return "handshake failed: " + pop3.Sanitize(msg)
}
