package proxy

import (
	"context"
	"slices"
	"time"

	"github.com/popproxy/popproxy/internal/pop3"
)

// Predial: USER names the user, and so the upstream, one round trip before
// PASS brings the password. The proxy dials then, in a goroutine of its own,
// so that connecting, TLS, the greeting and what the dial sends overlap the
// client's PASS; PASS's login takes the connection instead of dialling.
// Nothing is audited or answered at USER: a login PASS would refuse before
// the dial is not predialled, and PASS refuses it as ever.

// predialHold is how long a predialled connection waits for PASS before it
// is closed (PASS then dials as without it). A client sends PASS one round
// trip after USER's +OK, so 10s is ample even over a slow link, while a
// client that sends USER and never PASS holds an upstream connection for
// that long only, per session (the per-address session limits bound the
// sessions). A variable for the tests.
var predialHold = 10 * time.Second

// predial is a dial started at USER.
type predial struct {
	chain   []string // the session's, told to a popproxy upstream
	cancel  context.CancelFunc
	handoff chan predialResult // unbuffered: a result passes only to PASS
	done    chan struct{}      // closed when the goroutine has ended
}

// predialResult is what dialUpstream returned for up, and how long it took.
type predialResult struct {
	up   Upstream
	u    *upstream
	err  error
	dial time.Duration
}

// startPredial replaces the session's predial with one for name. An APOP
// passthrough listener has none: its connection from before the greeting
// serves USER too (see connect).
func (s *session) startPredial(name string) {
	s.dropPredial()
	if s.lc.APOP {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	p := &predial{chain: s.chain, cancel: cancel, handoff: make(chan predialResult), done: make(chan struct{})}
	s.early = p
	go s.runPredial(ctx, p, name)
}

// runPredial dials name's upstream if a login as name would get that far
// (see predialTarget) and offers the result to PASS for predialHold, closing
// it unless PASS takes it.
func (s *session) runPredial(ctx context.Context, p *predial, name string) {
	defer close(p.done)
	defer func() {
		// A panic (in a SharedLimits, say) ends the predial, not the
		// process: PASS then dials as without one.
		if r := recover(); r != nil {
			s.srv.panicked(r, "session", s.id, "in", "predial")
		}
	}()
	up, ok := s.predialTarget(name)
	if !ok {
		return
	}
	start := time.Now()
	u, err := s.srv.dialUpstream(ctx, up, dialInfo{client: s.remote, local: s.local, session: s.id, chain: p.chain})
	hold := time.NewTimer(predialHold)
	defer hold.Stop()
	select {
	case p.handoff <- predialResult{up: up, u: u, err: err, dial: time.Since(start)}:
		return
	case <-hold.C:
	case <-ctx.Done():
	}
	if u != nil {
		u.close() // no QUIT: nothing was sent but what a dial sends
	}
}

// predialTarget returns the upstream a login as name dials, if it passes
// the checks before the dial that need no password: the name's syntax, the
// address's block, the route, the user's block. It only asks (it runs
// beside the session's goroutine): PASS's login applies them for real.
func (s *session) predialTarget(name string) (Upstream, bool) {
	if pop3.CheckUser(name) != nil || s.addressBlocked() != nil {
		return Upstream{}, false
	}
	t, err := s.srv.routed(&identity{c: credentials{user: name}})
	if err != nil || s.userBlocked(t.tried) != nil {
		return Upstream{}, false
	}
	return t.up, true
}

// takePredial returns the session's predial's result, waiting for the dial
// if it is still under way. It returns nil if there was no predial, it made
// no dial, or it gave up waiting; and, closing the connection, if the login
// now goes elsewhere than up or tells a popproxy upstream another chain (a
// reload changed the route, XPOPPROXY the chain since USER).
func (s *session) takePredial(up Upstream) *predialResult {
	p := s.early
	if p == nil {
		return nil
	}
	s.early = nil
	defer p.stop()
	select {
	case r := <-p.handoff:
		if r.up.Name == up.Name && slices.Equal(r.up.Addresses, up.Addresses) && slices.Equal(p.chain, s.chain) {
			return &r
		}
		if r.u != nil {
			r.u.close()
		}
	case <-p.done:
	}
	return nil
}

// dropPredial ends the session's predial, if any, and closes its
// connection: another USER, STLS, AUTH, a login refused before the dial, or
// the end of the session.
func (s *session) dropPredial() {
	if p := s.early; p != nil {
		s.early = nil
		p.stop()
	}
}

// stop cancels the predial and waits for its goroutine, which closes what
// it has not handed over.
func (p *predial) stop() {
	p.cancel()
	<-p.done
}
