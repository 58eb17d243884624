package pop3

import "strings"

// maxTimestamp bounds an APOP timestamp taken from a greeting; a greeting line
// is at most 512 octets anyway (RFC 2449 §4).
const maxTimestamp = 256

// Timestamp returns the APOP timestamp in a greeting's text (RFC 1939 §7): the
// first word that is a msg-id, "<" local "@" domain ">", printable ASCII
// without further angle brackets. ok is false when the server offers none.
func Timestamp(text string) (ts string, ok bool) {
	for _, w := range strings.Fields(text) {
		if isTimestamp(w) {
			return w, true
		}
	}
	return "", false
}

func isTimestamp(w string) bool {
	if len(w) < 5 || len(w) > maxTimestamp || w[0] != '<' || w[len(w)-1] != '>' {
		return false
	}
	inner := w[1 : len(w)-1]
	at := strings.LastIndexByte(inner, '@')
	if at <= 0 || at == len(inner)-1 {
		return false
	}
	for i := 0; i < len(inner); i++ {
		if c := inner[i]; c <= ' ' || c >= 0x7f || c == '<' || c == '>' {
			return false
		}
	}
	return true
}

// IsAPOPDigest reports whether s is an APOP digest: an MD5 value written as
// 32 hexadecimal digits (RFC 1939 §7).
func IsAPOPDigest(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}
