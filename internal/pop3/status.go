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
	// Code is the RFC 2449 §8 response code without brackets ("SYS/TEMP"), or
	// "". It is never anything else than a valid code (see ParseStatus).
	Code string
	// Text is what follows the indicator and the code, unchanged: pass it
	// through Sanitize, or use Line, before showing it to anyone.
	Text string
}

// MaxCode bounds a response code, in octets. The codes of RFC 2449 and RFC
// 3206 have at most 11.
const MaxCode = 64

// ParseStatus parses the first line of a response (without its CRLF). Status
// indicators are upper case (RFC 1939 §3) and followed by a space or the end.
//
// A response code is kept only if it is valid: at most MaxCode octets of
// A-Z, 0-9 and '-', in levels separated by '/' (RFC 2449 §8, restricted to
// the characters codes use in practice). Invalid bracketed groups at the
// start of the text are dropped until a valid code, or text that cannot start
// with one: a client reads a code there, so only a valid one may be left.
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
	for strings.HasPrefix(s, "[") {
		code, rest, ok := strings.Cut(s[1:], "]")
		if !ok {
			break // no closing bracket: text, not a code
		}
		s = strings.TrimPrefix(rest, " ")
		if validCode(code) {
			st.Code = code
			break
		}
	}
	st.Text = s
	return st, nil
}

// validCode reports whether code may be relayed as a response code.
func validCode(code string) bool {
	if len(code) > MaxCode {
		return false
	}
	for _, level := range strings.Split(code, "/") {
		if level == "" {
			return false
		}
		for i := 0; i < len(level); i++ {
			c := level[i]
			if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Line returns the status line to relay to a client, without CRLF: the
// indicator, the response code if there is one, and the text through
// Sanitize. Parsing it again gives st back with its text sanitised.
func (st Status) Line() string {
	line := "-ERR"
	if st.OK {
		line = "+OK"
	}
	if st.Code != "" {
		line += " [" + st.Code + "]"
	}
	if st.Text != "" {
		line += " " + Sanitize(st.Text)
	}
	return line
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
