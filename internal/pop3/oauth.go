package pop3

import (
	"errors"
	"strings"
)

// Errors from ParseOAuthBearer and ParseXOAuth2. Their texts are safe to show a
// client and never quote the response.
var (
	ErrBadOAuth    = errors.New("malformed OAuth initial response")
	ErrNoOAuthUser = errors.New("OAuth initial response names no valid user")
)

// IsOAuth reports whether mech is an OAuth 2.0 bearer token mechanism, which
// the proxy relays upstream instead of decoding a password from it.
func IsOAuth(mech string) bool {
	return mech == "OAUTHBEARER" || mech == "XOAUTH2"
}

// ParseOAuthBearer reads the user and the token from a decoded OAUTHBEARER
// initial response (RFC 7628 §3.1):
//
//	gs2-header ^A *(key=value ^A) ^A,  gs2-header = ("n" / "y") "," "a=" saslname ","
//
// The user is the authorization identity, with "=2C" and "=3D" unescaped
// (RFC 5801 §4); it is required, because the proxy routes on it, and must
// pass CheckUser. The token is the auth value ("Bearer ..."), which must be
// there. Channel binding ("p=") does not exist over a proxy and is refused.
func ParseOAuthBearer(msg []byte) (user, token string, err error) {
	header, rest, ok := strings.Cut(string(msg), "\x01")
	if !ok {
		return "", "", ErrBadOAuth
	}
	flag, rest2, ok := strings.Cut(header, ",")
	if !ok || flag != "n" && flag != "y" {
		return "", "", ErrBadOAuth
	}
	authzid, end, ok := strings.Cut(rest2, ",")
	if !ok || end != "" {
		return "", "", ErrBadOAuth
	}
	name, ok := strings.CutPrefix(authzid, "a=")
	if !ok {
		return "", "", ErrNoOAuthUser
	}
	if user, ok = unescapeSASLName(name); !ok || CheckUser(user) != nil {
		return "", "", ErrNoOAuthUser
	}
	pairs, ok := kvPairs(rest)
	if !ok || pairs["auth"] == "" {
		return "", "", ErrBadOAuth
	}
	return user, pairs["auth"], nil
}

// ParseXOAuth2 reads the user and the token from a decoded XOAUTH2 initial
// response (Google's XOAUTH2 protocol): "user=" USER ^A "auth=Bearer " TOKEN
// ^A ^A. The user must pass CheckUser.
func ParseXOAuth2(msg []byte) (user, token string, err error) {
	pairs, ok := kvPairs(string(msg))
	if !ok || pairs["auth"] == "" {
		return "", "", ErrBadOAuth
	}
	user = pairs["user"]
	if CheckUser(user) != nil {
		return "", "", ErrNoOAuthUser
	}
	return user, pairs["auth"], nil
}

// kvPairs parses RFC 7628 §3.1's "*kvpair kvsep": key=value pairs, each
// ended by ^A, then one more ^A. Keys are letters and appear once; values
// hold no NUL (some servers would cut them there).
func kvPairs(s string) (map[string]string, bool) {
	body, ok := strings.CutSuffix(s, "\x01")
	if !ok {
		return nil, false
	}
	pairs := map[string]string{}
	for body != "" {
		pair, rest, ok := strings.Cut(body, "\x01")
		if !ok {
			return nil, false
		}
		key, value, ok := strings.Cut(pair, "=")
		if _, dup := pairs[key]; !ok || dup || !isAlpha(key) || strings.Contains(value, "\x00") {
			return nil, false
		}
		pairs[key] = value
		body = rest
	}
	return pairs, true
}

func isAlpha(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// unescapeSASLName undoes RFC 5801 §4's saslname escaping: "=2C" is ",",
// "=3D" is "=", and any other "=" is malformed.
func unescapeSASLName(s string) (string, bool) {
	if !strings.Contains(s, "=") {
		return s, true
	}
	var b strings.Builder
	for s != "" {
		before, after, found := strings.Cut(s, "=")
		b.WriteString(before)
		if !found {
			break
		}
		switch {
		case strings.HasPrefix(after, "2C"):
			b.WriteByte(',')
		case strings.HasPrefix(after, "3D"):
			b.WriteByte('=')
		default:
			return "", false
		}
		s = after[2:]
	}
	return b.String(), true
}
