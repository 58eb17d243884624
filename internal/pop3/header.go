package pop3

import (
	"bytes"
	"strings"
)

// maxHeaderValue bounds a collected header value (RFC 5322 §2.1.1's line limit).
const maxHeaderValue = 998

// MessageIDWatcher returns a CopyBody watcher that stores the value of the
// message's Message-ID header (RFC 5322 §3.6.4), unfolded and with control
// characters replaced, in *id, and stops watching at the end of the header
// section (a blank line, or a line that is no header field), so a message
// body is never looked at.
func MessageIDWatcher(id *string) func(line []byte) bool {
	var value []byte
	inMessageID := false
	return func(line []byte) bool {
		if len(line) == 0 {
			*id = Sanitize(strings.TrimSpace(string(value)))
			return false // end of the header section
		}
		if line[0] == ' ' || line[0] == '\t' {
			if inMessageID && len(value)+len(line) <= maxHeaderValue {
				value = append(value, line...) // RFC 5322 §2.2.3: unfold
			}
			return true
		}
		if inMessageID {
			*id = Sanitize(strings.TrimSpace(string(value)))
			return false
		}
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return false // not a header field (RFC 5322 §2.2): no header section, or it is over
		}
		if strings.EqualFold(string(bytes.TrimSpace(name)), "Message-ID") {
			inMessageID = true
			value = append(value[:0], rest[:min(len(rest), maxHeaderValue)]...)
		}
		return true
	}
}
