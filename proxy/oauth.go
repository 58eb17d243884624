package proxy

import (
	"errors"
	"strings"

	"github.com/popproxy/popproxy/internal/pop3"
)

// authOAuth starts an OAuth 2.0 login: OAUTHBEARER (RFC 7628) or XOAUTH2.
// The proxy cannot check a bearer token. It reads only the user from the
// initial response, for routing, limits and the audit, and logs in upstream
// with the same mechanism and response (relayOAuth), for the server to
// judge. Without an initial response, the client sends it after "+ ".
// A response naming no valid user gets -ERR [AUTH] (RFC 3206 §4) and never
// goes upstream.
func (s *session) authOAuth(mech string, initial *string) error {
	resp, ok, err := s.saslResponse("", initial)
	if !ok {
		return err
	}
	parse := pop3.ParseOAuthBearer
	if mech == "XOAUTH2" {
		parse = pop3.ParseXOAuth2
	}
	msg, err := pop3.DecodeSASL(resp)
	var user, token string
	if err == nil {
		user, token, err = parse(msg)
	}
	if err != nil {
		return s.refuse(refused(RuleSyntax, "AUTH", "[AUTH] "+err.Error()))
	}
	return s.login(credentials{user: user, pass: token, mech: mech, initial: resp})
}

// maxSASLSteps bounds the challenges relayed in one login. RFC 7628's error
// exchange takes one; a server asking more is broken.
const maxSASLSteps = 4

// brokenOff is a relayed SASL exchange that the client broke off after a
// challenge: it cancelled, sent a line with a control character, or went
// away. The only challenge after an OAuth initial response is the server's
// refusal (RFC 7628 §3.2.2; XOAUTH2 alike), so it is a failed login; curl
// hangs up there rather than answer. The client has been answered; end is
// the session's end, if it ends.
type brokenOff struct {
	reason string
	end    error
}

func (e *brokenOff) Error() string { return e.reason }

// relayOAuth logs in upstream with the client's mechanism and initial
// response as sent, then relays the server's challenges and the client's
// answers as sent until the server's verdict. A failed OAUTHBEARER login is
// such a challenge, base64 JSON (RFC 7628 §3.2.2), which the client answers
// with ^A ("AQ==") to get the -ERR; XOAUTH2 clients answer an empty line.
// A client's "*" is not relayed: the proxy drops the upstream itself.
func (s *session) relayOAuth(u *upstream, c credentials) (pop3.Status, error) {
	line := "AUTH " + c.mech + " " + c.initial
	for range maxSASLSteps {
		challenge, more, st, err := u.saslStep(line)
		if err != nil || !more {
			return st, err
		}
		answer, ok, err := s.saslResponse(challenge, nil)
		if !ok {
			return pop3.Status{}, &brokenOff{reason: "client broke off the SASL exchange", end: err}
		}
		line = answer
	}
	return pop3.Status{}, errors.New("upstream sent too many SASL challenges")
}

// errBadChallenge is a server's SASL challenge that is not base64 on one line.
var errBadChallenge = errors.New("upstream sent a malformed SASL challenge")

// saslStep sends one line of a SASL exchange and reads the server's answer:
// a challenge, "+ " and base64 (RFC 5034 §4), which more reports, or the
// final status. A challenge is checked before a client may see it.
func (u *upstream) saslStep(line string) (challenge string, more bool, st pop3.Status, err error) {
	if _, err := u.conn.Write([]byte(line + "\r\n")); err != nil {
		return "", false, st, err
	}
	resp, err := u.readLine(maxSASLLine)
	if err != nil {
		return "", false, st, err
	}
	if rest, ok := strings.CutPrefix(string(resp), "+ "); ok || string(resp) == "+" {
		if _, err := pop3.DecodeSASL(rest); err != nil || pop3.CheckLine(resp) != nil {
			return "", false, st, errBadChallenge
		}
		return rest, true, st, u.release()
	}
	if st, err = pop3.ParseStatus(resp); err != nil {
		return "", false, st, err
	}
	return "", false, st, u.release()
}
