package pop3

import "strings"

// relayable lists the capabilities (RFC 2449 §6 and its registry) whose commands
// the proxy parses and relays in the TRANSACTION state. STLS, SASL, UTF8 and LANG
// belong to AUTHORIZATION, which the proxy answers itself; IMPLEMENTATION would
// fingerprint the server behind the proxy; anything unknown is dropped because
// the proxy would refuse its commands anyway.
var relayable = map[string]bool{
	"TOP":            true,
	"UIDL":           true,
	"USER":           true,
	"RESP-CODES":     true,
	"AUTH-RESP-CODE": true,
	"PIPELINING":     true,
	"EXPIRE":         true,
	"LOGIN-DELAY":    true,
}

// FilterCapability returns the canonical form of one line of a server's CAPA
// list if the proxy can relay that capability after login, and false otherwise.
// The canonical form is the upper-cased tag and its arguments, single-spaced;
// arguments must be printable ASCII.
func FilterCapability(line string) (string, bool) {
	fields := strings.Fields(line)
	if len(fields) == 0 || Sanitize(line) != line {
		return "", false
	}
	tag := strings.ToUpper(fields[0])
	if !relayable[tag] {
		return "", false
	}
	fields[0] = tag
	return strings.Join(fields, " "), true
}
