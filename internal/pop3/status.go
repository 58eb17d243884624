package pop3

import (
	"errors"
	"strings"
)

// ErrBadStatus reports a response line that starts with neither +OK nor -ERR.
var ErrBadStatus = errors.New("pop3: malformed status line")

// Status is a parsed response line.
type Status struct {
	OK bool
	// Code is the RFC 2449 §8 response code without brackets ("SYS/TEMP"), or "".
	Code string
	// Text is what follows the indicator and the code.
	Text string
}

// ParseStatus parses the first line of a response (without its CRLF). Status
// indicators are upper case (RFC 1939 §3) and followed by a space or the end.
func ParseStatus(line []byte) (Status, error) {
	s := string(line)
	var st Status
	switch {
	case strings.HasPrefix(s, "+OK"):
		st.OK, s = true, s[3:]
	case strings.HasPrefix(s, "-ERR"):
		s = s[4:]
	default:
		return Status{}, ErrBadStatus
	}
	if s != "" && s[0] != ' ' {
		return Status{}, ErrBadStatus
	}
	s = strings.TrimPrefix(s, " ")
	if strings.HasPrefix(s, "[") {
		if code, rest, ok := strings.Cut(s[1:], "]"); ok && code != "" && !strings.ContainsAny(code, " [") {
			st.Code, s = code, strings.TrimPrefix(rest, " ")
		}
	}
	st.Text = s
	return st, nil
}

// Sanitize returns s with every byte outside printable ASCII replaced by '?', so
// that text from a server (an error message, a greeting) cannot carry terminal
// escapes or line breaks to a client.
func Sanitize(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = '?'
		}
	}
	return string(b)
}
