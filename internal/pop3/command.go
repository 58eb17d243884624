package pop3

import (
	"errors"
	"strconv"
	"strings"
)

// Errors from ParseCommand and ParseNumber. Their texts are safe to show a client.
var (
	ErrEmpty      = errors.New("empty command")
	ErrBadKeyword = errors.New("malformed command keyword")
	ErrBadChar    = errors.New("control character in command")
	ErrBadNumber  = errors.New("invalid number")
)

// maxKeyword is generous: RFC 1939 keywords have 3 or 4 characters, but
// extensions such as XCLIENT are longer.
const maxKeyword = 16

// Command is one parsed client command.
type Command struct {
	// Verb is the keyword, upper-cased (keywords are case-insensitive, RFC 1939 §3).
	Verb string
	// Args are the arguments, separated by SP; runs of SP count as one. Any
	// other byte, Unicode white space included, belongs to an argument.
	Args []string
	// Tail is everything after the keyword and one space, unchanged: PASS takes
	// it whole because a password may contain spaces (RFC 1939 §7).
	Tail string
}

// ParseCommand splits a command line (without its CRLF). It rejects control
// characters, NUL included: some servers cut a line at NUL, so "USER a\x00b" would
// mean different things to the proxy and to the server.
func ParseCommand(line []byte) (Command, error) {
	if err := CheckLine(line); err != nil {
		return Command{}, err
	}
	s := string(line)
	keyword, tail, _ := strings.Cut(s, " ")
	if keyword == "" {
		if strings.TrimLeft(s, " ") == "" {
			return Command{}, ErrEmpty
		}
		return Command{}, ErrBadKeyword
	}
	if !IsKeyword(keyword) {
		return Command{}, ErrBadKeyword
	}
	return Command{Verb: strings.ToUpper(keyword), Args: strings.FieldsFunc(tail, isSP), Tail: tail}, nil
}

// CheckLine returns ErrBadChar if line (without its CRLF) holds a control
// character: CR, LF and NUL included, which could end or cut it upstream.
func CheckLine(line []byte) error {
	for _, c := range line {
		if c < ' ' || c == 0x7f {
			return ErrBadChar
		}
	}
	return nil
}

// isSP is the only argument separator (RFC 1939 §3). strings.Fields would also
// split at Unicode white space, so "LIST 1\u3000" would reach the server as
// "LIST 1", and the proxy would check one command and forward another.
func isSP(r rune) bool { return r == ' ' }

// IsKeyword reports whether s can be a command keyword: 1 to 16 ASCII letters
// and digits, in any case.
func IsKeyword(s string) bool {
	if s == "" || len(s) > maxKeyword {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// AppendWire appends the canonical form of c to b: the keyword, each argument
// after one space, CRLF. The proxy forwards this, never the client's bytes.
func (c Command) AppendWire(b []byte) []byte {
	b = append(b, c.Verb...)
	for _, a := range c.Args {
		b = append(b, ' ')
		b = append(b, a...)
	}
	return append(b, '\r', '\n')
}

// maxNumber keeps message numbers and line counts within what every server can
// hold in a 32-bit integer.
const maxNumber = 1<<31 - 1

// ParseNumber parses a decimal message number or line count: digits only, no
// sign, at most maxNumber.
func ParseNumber(s string) (int, error) {
	if s == "" || len(s) > 10 {
		return 0, ErrBadNumber
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, ErrBadNumber
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > maxNumber {
		return 0, ErrBadNumber
	}
	return n, nil
}
