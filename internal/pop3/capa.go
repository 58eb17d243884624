package pop3

import "strings"

// FilterCapability returns the canonical form of one line of a server's CAPA
// list if relayable says the proxy can relay its capability after login, and
// false otherwise. relayable is given the upper-cased tag. The canonical form
// is the upper-cased tag and its arguments, single-spaced; arguments must be
// printable ASCII.
func FilterCapability(line string, relayable func(tag string) bool) (string, bool) {
	fields := strings.Fields(line)
	if len(fields) == 0 || Sanitize(line) != line {
		return "", false
	}
	tag := strings.ToUpper(fields[0])
	if !relayable(tag) {
		return "", false
	}
	fields[0] = tag
	return strings.Join(fields, " "), true
}
