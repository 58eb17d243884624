package pop3

import (
	"bytes"
	"encoding/base64"
	"errors"
)

// ErrBadSASL reports an undecodable or malformed SASL response. Its text is safe
// to show a client and never includes the response itself.
var ErrBadSASL = errors.New("malformed SASL response")

// DecodeSASL decodes one base64 SASL response line (RFC 5034 §4). "=" stands for
// an empty response.
func DecodeSASL(s string) ([]byte, error) {
	if s == "=" {
		return []byte{}, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrBadSASL
	}
	return b, nil
}

// EncodeSASL is DecodeSASL's inverse, for challenges and relayed responses.
func EncodeSASL(b []byte) string {
	if len(b) == 0 {
		return "="
	}
	return base64.StdEncoding.EncodeToString(b)
}

// ParsePlain splits a SASL PLAIN message (RFC 4616 §2):
// [authzid] NUL authcid NUL passwd. Empty authcid or passwd, or another NUL,
// is an error. What the fields may hold is CheckCredentials' business, as for
// every other login.
func ParsePlain(msg []byte) (authzid, authcid, passwd string, err error) {
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 || len(parts[2]) == 0 {
		return "", "", "", ErrBadSASL
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), nil
}
