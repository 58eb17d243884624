package metrics

import (
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/popproxy/popproxy/proxy"
)

// verbList is the TRANSACTION verbs of the proxy's verb table, which get a
// label value of their own; any other verb is counted as "other".
var verbList = append(proxy.TransactionVerbs(), verbOther)

const verbOther = "other"

// verb returns the series of verb v. The label set is bounded: the proxy refuses unknown verbs itself,
// but an extension it learns to relay later must not grow the label set.
func (m *Metrics) verb(v string) verbCounters {
	if c, ok := m.verbs[v]; ok {
		return c
	}
	if c, ok := m.verbs[strings.ToUpper(v)]; ok {
		return c
	}
	return m.verbs[verbOther]
}

// failureCodes are the label values for a login's response code: RFC 2449
// §8 (in-use, login-delay) and RFC 3206 (sys/temp, sys/perm, auth), "none"
// when there was no code, and "other" for anything else an upstream sends,
// since the code of a failure is the upstream's choice.
var failureCodes = []string{"auth", "sys/temp", "sys/perm", "in-use", "login-delay", "none", "other"}

var knownCodes = func() map[string]bool {
	m := make(map[string]bool, len(failureCodes))
	for _, c := range failureCodes {
		m[c] = true
	}
	return m
}()

// codeLabel is a response code as the reason label: lower-cased, "none" if
// empty, "other" if not one of failureCodes.
func codeLabel(code string) string {
	if code == "" {
		return "none"
	}
	code = strings.ToLower(code)
	if knownCodes[code] {
		return code
	}
	return "other"
}

// label makes a label value from a string the proxy or its configuration
// chose (listener names, TLS modes and versions, rules, close reasons).
// Prometheus panics on invalid UTF-8, and an Auditor must never take a
// session, or the process, down.
func label(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func result(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}

// Auditor returns a proxy.Auditor that updates m from each event and then
// passes the event, unchanged, to next. If next is nil, events stop here and
// Err always returns nil; otherwise Err is next's. The returned Auditor is
// safe for concurrent use, as proxy.Auditor requires, and never blocks beyond
// a short mutex held for SessionOpen and SessionClose. Several Auditors from
// one Metrics share its metrics.
func (m *Metrics) Auditor(next proxy.Auditor) proxy.Auditor {
	return &auditor{m: m, next: next}
}

type auditor struct {
	m    *Metrics
	next proxy.Auditor // may be nil
}

var _ proxy.Auditor = (*auditor)(nil)

func (a *auditor) SessionOpen(info proxy.SessionInfo) {
	m := a.m
	l := prometheus.Labels{"listener": label(info.Listener), "tls": label(info.TLSMode)}
	m.sessionsTotal.With(l).Inc()
	g := m.sessionsOpen.With(l)
	g.Inc()
	m.mu.Lock()
	if old, ok := m.open[info.ID]; ok {
		// An ID opened twice without a close: count the session once.
		old.Dec()
	}
	m.open[info.ID] = g
	m.mu.Unlock()
	if a.next != nil {
		a.next.SessionOpen(info)
	}
}

func (a *auditor) TLS(id string, e proxy.TLSEvent) {
	a.m.tlsHandshakes.WithLabelValues(label(e.Mode), label(e.Version)).Inc()
	if a.next != nil {
		a.next.TLS(id, e)
	}
}

func (a *auditor) Auth(id string, e proxy.AuthEvent) {
	m := a.m
	m.logins.WithLabelValues(result(e.OK, "ok", "failed"), codeLabel(e.Code)).Inc()
	if e.Dial > 0 {
		m.dialSeconds.Observe(e.Dial.Seconds())
	}
	if e.DialFailed {
		m.upstreamFailed.Inc()
	}
	if a.next != nil {
		a.next.Auth(id, e)
	}
}

func (a *auditor) Command(id string, e proxy.CommandEvent) {
	m := a.m
	c := m.verb(e.Verb)
	if e.OK {
		c.ok.Inc()
	} else {
		c.err.Inc()
	}
	if e.Octets > 0 {
		c.bytes.Add(float64(e.Octets))
	}
	if e.Incomplete {
		m.incompleteResps.Inc()
	}
	if a.next != nil {
		a.next.Command(id, e)
	}
}

func (a *auditor) Policy(id string, e proxy.PolicyEvent) {
	rule := label(string(e.Rule))
	n := float64(max(e.Count, 1)) // a summary of refused connections stands for Count
	a.m.policyRefusals.WithLabelValues(rule).Add(n)
	if limit, ok := strings.CutPrefix(rule, "limit."); ok {
		a.m.limitRefusals.WithLabelValues(limit).Add(n)
	}
	if a.next != nil {
		a.next.Policy(id, e)
	}
}

// Checkpoint updates nothing: the counters it carries are already counted
// event by event.
func (a *auditor) Checkpoint(id string, e proxy.Counters) {
	if a.next != nil {
		a.next.Checkpoint(id, e)
	}
}

func (a *auditor) SessionClose(id string, e proxy.CloseEvent) {
	m := a.m
	m.sessionCloses.WithLabelValues(label(string(e.Reason))).Inc()
	m.mu.Lock()
	g, ok := m.open[id]
	delete(m.open, id)
	m.mu.Unlock()
	if ok {
		g.Dec()
	}
	if a.next != nil {
		a.next.SessionClose(id, e)
	}
}

func (a *auditor) Err() error {
	if a.next == nil {
		return nil
	}
	return a.next.Err()
}
