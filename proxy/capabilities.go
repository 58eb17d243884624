package proxy

import (
	"slices"
	"strings"
	"sync"

	"github.com/popproxy/popproxy/internal/pop3"
)

// capBits is a set of the capabilities that depend on the upstream server.
type capBits uint8

const (
	capTop capBits = 1 << iota
	capUIDL
	// capAuthRespCode: the server marks refused credentials [AUTH] (RFC
	// 3206 §6), so its -ERR without a code is about something else (a
	// mailbox it cannot open, a shutdown). Never announced as the
	// server's: popproxy lists AUTH-RESP-CODE itself whatever the server.
	capAuthRespCode
	// capPipelining: the server takes commands before it answers the
	// previous ones (RFC 2449 §6.6), so USER and PASS go together. Never
	// announced as the server's either: popproxy pipelines whatever the
	// server.
	capPipelining
	allCaps = capTop | capUIDL | capAuthRespCode | capPipelining
)

// upstreamCaps names capBits' members, in the order CAPA lists them. RFC
// 2449 §6: they may not differ between AUTHORIZATION and TRANSACTION, so
// popproxy announces one set in both. USER, SASL, RESP-CODES,
// AUTH-RESP-CODE and PIPELINING are its own, whatever the server.
var upstreamCaps = []struct {
	name string
	bit  capBits
}{{"TOP", capTop}, {"UIDL", capUIDL}}

// parseCaps returns the members of capBits among names, ignoring case and
// anything else.
func parseCaps(names []string) capBits {
	var has capBits
	for _, n := range names {
		switch {
		case strings.EqualFold(n, "AUTH-RESP-CODE"):
			has |= capAuthRespCode
		case strings.EqualFold(n, "PIPELINING"):
			has |= capPipelining
		}
		for _, c := range upstreamCaps {
			if strings.EqualFold(n, c.name) {
				has |= c.bit
			}
		}
	}
	return has
}

func (b capBits) names() []string {
	var out []string
	for _, c := range upstreamCaps {
		if b&c.bit != 0 {
			out = append(out, c.name)
		}
	}
	return out
}

// learntCaps is what popproxy found out about one upstream: which
// capabilities it knows about, and which of those the server has.
type learntCaps struct {
	addrs      []string // where it was learnt; other addresses may be another server
	known, has capBits
}

// capMemory remembers, per upstream name, what was learnt, for the life of
// the process. It is safe for concurrent use.
type capMemory struct {
	mu sync.Mutex
	m  map[string]learntCaps
}

// get returns what is known of up. Knowledge gathered at other addresses
// (before a reload changed them) counts for nothing.
func (cm *capMemory) get(up Upstream) (known, has capBits) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	l, ok := cm.m[up.Name]
	if !ok || !slices.Equal(l.addrs, up.Addresses) {
		return 0, 0
	}
	return l.known, l.has
}

// learn adds what was found out about the members of known to what is
// remembered of up.
func (cm *capMemory) learn(up Upstream, known, has capBits) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if cm.m == nil {
		cm.m = map[string]learntCaps{}
	}
	l := cm.m[up.Name]
	if !slices.Equal(l.addrs, up.Addresses) {
		l = learntCaps{addrs: slices.Clone(up.Addresses)}
	}
	l.known |= known
	l.has = l.has&^known | has&known
	cm.m[up.Name] = l
}

// upstreamCapabilities returns which capabilities popproxy knows about for
// up, and which of them up has: all of them from up.Capabilities if
// configured, else what was learnt.
func (srv *Server) upstreamCapabilities(up Upstream) (known, has capBits) {
	if up.Capabilities != nil {
		return allCaps, parseCaps(up.Capabilities)
	}
	return srv.caps.get(up)
}

// announcedCaps are the upstream capabilities announced before login: those
// that every upstream a route leads to is known to have, since the user, and
// so the upstream, is unknown yet. Until popproxy has learnt one, it is not
// announced: a client may find a command missing from CAPA and use it
// anyway, but it must not be promised one that fails.
func (srv *Server) announcedCaps() capBits {
	ups := srv.reachable()
	if len(ups) == 0 {
		return 0
	}
	out := allCaps
	for _, up := range ups {
		known, has := srv.upstreamCapabilities(up)
		out &= known & has
	}
	return out
}

// learnCapabilities finds out, right after a login to up, what is not yet
// known about up's capabilities: from its CAPA, or, from a server without
// CAPA (RFC 1939 only), by trying UIDL and TOP on the first message, which
// changes nothing. An empty mailbox shows UIDL but says nothing about TOP,
// which a later login then tries again.
func (s *session) learnCapabilities(up Upstream) error {
	known, _ := s.srv.upstreamCapabilities(up)
	if known == allCaps {
		return nil
	}
	st, lines, err := s.probe(pop3.Command{Verb: "CAPA"}, true)
	if err != nil {
		return err
	}
	if st.OK {
		var names []string
		for _, line := range lines {
			if c, ok := filterCapability(line); ok {
				names = append(names, c)
			}
		}
		s.srv.caps.learn(up, allCaps, parseCaps(names))
		return nil
	}
	s.srv.caps.learn(up, capAuthRespCode|capPipelining, 0) // no CAPA, so neither
	if st, _, err = s.probe(pop3.Command{Verb: "STAT"}, false); err != nil || !st.OK {
		return err
	}
	count, _, _ := strings.Cut(st.Text, " ")
	if n, err := pop3.ParseNumber(count); err != nil || n == 0 {
		st, _, err := s.probe(pop3.Command{Verb: "UIDL"}, true)
		if err == nil {
			s.srv.caps.learn(up, capUIDL, okBit(st, capUIDL))
		}
		return err
	}
	if known&capUIDL == 0 {
		st, _, err := s.probe(pop3.Command{Verb: "UIDL", Args: []string{"1"}}, false)
		if err != nil {
			return err
		}
		s.srv.caps.learn(up, capUIDL, okBit(st, capUIDL))
	}
	if known&capTop == 0 {
		st, _, err := s.probe(pop3.Command{Verb: "TOP", Args: []string{"1", "0"}}, true)
		if err != nil {
			return err
		}
		s.srv.caps.learn(up, capTop, okBit(st, capTop))
	}
	return nil
}

// okBit is bit if st is +OK, else none.
func okBit(st pop3.Status, bit capBits) capBits {
	if st.OK {
		return bit
	}
	return 0
}

// probe sends cmd, a command of the proxy's own, and reads the whole reply:
// the status, and, after a +OK to a multi-line command, the body's lines
// (at most maxListLines of them kept).
func (s *session) probe(cmd pop3.Command, multi bool) (pop3.Status, []string, error) {
	_, st, err := s.roundTrip(cmd)
	if err != nil {
		return st, nil, err
	}
	var lines []string
	if st.OK && multi {
		if lines, err = s.up.readList(); err != nil {
			return st, nil, s.upstreamFailed(err)
		}
	}
	if err := s.up.release(); err != nil {
		return st, nil, s.upstreamFailed(err)
	}
	return st, lines, nil
}

// sharedCaps are the capabilities CAPA lists alike before and after login
// (RFC 2449 §6), given the upstream ones: those first, then popproxy's
// own, which it provides whatever the server: USER and SASL with mechs (it
// logs in itself) unless login is false (before STLS where TLS is
// required, RFC 2595 §4), response codes, and pipelining (it answers
// commands in order).
func sharedCaps(up capBits, login bool, mechs []string) []string {
	caps := up.names()
	if login {
		caps = append(caps, "USER")
		if len(mechs) > 0 {
			caps = append(caps, "SASL "+strings.Join(mechs, " "))
		}
	}
	return append(caps, "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING")
}

// sessionCaps returns the upstream capabilities this session announces,
// fixed the first time it answers CAPA: a set learnt in between must not
// make its CAPA after login differ from its CAPA before.
func (s *session) sessionCaps() capBits {
	if !s.upCapsFixed {
		s.upCaps, s.upCapsFixed = s.srv.announcedCaps(), true
	}
	return s.upCaps
}
