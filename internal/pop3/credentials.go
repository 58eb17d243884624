package pop3

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits on the credentials of a login, whichever command carried them.
const (
	// MaxUserLen is the longest user name or authorization identity, in
	// octets: route.MaxUserLen, so that no name passes here only to be
	// refused for its length by the router.
	MaxUserLen = 255
	// MaxPasswordLen is the longest password, in octets. A PASS line holds at
	// most 249 (RFC 2449 §4) but a SASL response can hold more, and a
	// password manager may make long ones.
	MaxPasswordLen = 1024
)

// ErrBadCredentials reports credentials that no login may carry. It is
// wrapped with a reason that names the field but never quotes it, so the text
// is safe to show the client and to audit.
var ErrBadCredentials = errors.New("invalid credentials")

// CheckCredentials applies one rule to every login, whether it came by USER
// and PASS, AUTH PLAIN or AUTH LOGIN, so that no command can send upstream
// what another would refuse. Each field is valid UTF-8 without C0 controls
// or DEL, which could end or cut a line upstream. The user name has 1 to
// MaxUserLen octets and no SP, which a USER line could not carry; the
// password has 1 to MaxPasswordLen octets. authzid, if not empty, is checked
// as a user name.
func CheckCredentials(authzid, user, pass string) error {
	type field struct {
		name, value string
		max         int
		spaces      bool
	}
	fields := []field{
		{"user name", user, MaxUserLen, false},
		{"password", pass, MaxPasswordLen, true},
	}
	if authzid != "" {
		fields = append(fields, field{"authorization identity", authzid, MaxUserLen, false})
	}
	for _, f := range fields {
		if why := badField(f.value, f.max, f.spaces); why != "" {
			return fmt.Errorf("%w: %s %s", ErrBadCredentials, f.name, why)
		}
	}
	return nil
}

// CheckUser applies CheckCredentials' rule for user names alone, for logins
// whose secret the proxy does not read (OAuth 2.0 bearer tokens).
func CheckUser(name string) error {
	if why := badField(name, MaxUserLen, false); why != "" {
		return fmt.Errorf("%w: user name %s", ErrBadCredentials, why)
	}
	return nil
}

// badField says what is wrong with s, or returns "" if nothing is.
func badField(s string, max int, spaces bool) string {
	switch {
	case s == "":
		return "is empty"
	case len(s) > max:
		return fmt.Sprintf("is longer than %d octets", max)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < ' ' || c == 0x7f:
			return "holds a control character"
		case c == ' ' && !spaces:
			return "holds a space"
		}
	}
	return ""
}
