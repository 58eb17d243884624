package metrics

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/popproxy/popproxy/proxy"
)

// recorder is a proxy.Auditor that keeps every event it is given, in order.
type recorder struct {
	mu     sync.Mutex
	events []any
	err    error
}

var _ proxy.Auditor = (*recorder)(nil)

// call is one recorded method call other than SessionOpen.
type call struct {
	Method string
	ID     string
	Event  any
}

func (r *recorder) add(e any) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) SessionOpen(e proxy.SessionInfo)            { r.add(e) }
func (r *recorder) TLS(id string, e proxy.TLSEvent)            { r.add(call{"TLS", id, e}) }
func (r *recorder) Auth(id string, e proxy.AuthEvent)          { r.add(call{"Auth", id, e}) }
func (r *recorder) Command(id string, e proxy.CommandEvent)    { r.add(call{"Command", id, e}) }
func (r *recorder) Policy(id string, e proxy.PolicyEvent)      { r.add(call{"Policy", id, e}) }
func (r *recorder) Checkpoint(id string, e proxy.Counters)     { r.add(call{"Checkpoint", id, e}) }
func (r *recorder) SessionClose(id string, e proxy.CloseEvent) { r.add(call{"SessionClose", id, e}) }
func (r *recorder) Err() error                                 { return r.err }

// replay sends events, as recorded by a recorder, to a.
func replay(a proxy.Auditor, events []any) {
	for _, e := range events {
		switch e := e.(type) {
		case proxy.SessionInfo:
			a.SessionOpen(e)
		case call:
			switch ev := e.Event.(type) {
			case proxy.TLSEvent:
				a.TLS(e.ID, ev)
			case proxy.AuthEvent:
				a.Auth(e.ID, ev)
			case proxy.CommandEvent:
				a.Command(e.ID, ev)
			case proxy.PolicyEvent:
				a.Policy(e.ID, ev)
			case proxy.Counters:
				a.Checkpoint(e.ID, ev)
			case proxy.CloseEvent:
				a.SessionClose(e.ID, ev)
			default:
				panic(fmt.Sprintf("unknown event %T", ev))
			}
		default:
			panic(fmt.Sprintf("unknown event %T", e))
		}
	}
}

var (
	clientAddr = netip.MustParseAddrPort("192.0.2.7:50123")
	localAddr  = netip.MustParseAddrPort("198.51.100.1:995")
)

// script is three sessions: s1 on the implicit-TLS listener logs in at the
// second attempt and retrieves mail; s2 on the STLS listener meets an
// unreachable upstream, then a mailbox in use, then login delay; s3 is
// refused by a connection limit. Names, addresses and keys that must never
// become labels are spread throughout.
var script = []any{
	proxy.SessionInfo{ID: "s1", Listener: "pop3s", Client: clientAddr, Local: localAddr, TLSMode: "implicit", Start: time.Unix(1700000000, 0)},
	call{"TLS", "s1", proxy.TLSEvent{Mode: "implicit", Version: "TLS 1.3", CipherSuite: "TLS_AES_128_GCM_SHA256", ServerName: "mail.example.org"}},
	proxy.SessionInfo{ID: "s2", Listener: "pop3", Client: clientAddr, Local: localAddr, TLSMode: "starttls"},
	proxy.SessionInfo{ID: "s3", Listener: "pop3", Client: clientAddr, Local: localAddr, TLSMode: "starttls"},
	call{"TLS", "s2", proxy.TLSEvent{Mode: "starttls", Version: "TLS 1.2"}},
	call{"Auth", "s1", proxy.AuthEvent{User: "alice", Mechanism: "USER", Upstream: "10.9.8.7:110", Code: "AUTH", Reason: "bad password", Dial: 500 * time.Millisecond}},
	call{"Policy", "s1", proxy.PolicyEvent{Rule: "syntax", Verb: "PASS", Detail: "usage: PASS password"}},
	call{"Auth", "s1", proxy.AuthEvent{User: "alice", Mechanism: "PLAIN", OK: true, Upstream: "10.9.8.7:110", Reason: "logged in", Dial: 250 * time.Millisecond}},
	call{"Command", "s1", proxy.CommandEvent{Verb: "STAT", OK: true, Octets: 12}},
	call{"Command", "s1", proxy.CommandEvent{Verb: "RETR", Args: []string{"1"}, OK: true, Octets: 1000, Size: 980, UIDL: "u1", MessageID: "<1@example.org>"}},
	call{"Command", "s1", proxy.CommandEvent{Verb: "RETR", Args: []string{"2"}, OK: true, Octets: 500, Size: -1, Incomplete: true}},
	call{"Command", "s1", proxy.CommandEvent{Verb: "DELE", Args: []string{"9"}, OK: false, Octets: 20}},
	call{"Command", "s1", proxy.CommandEvent{Verb: "top", Args: []string{"1", "0"}, OK: true, Octets: 300}},
	call{"Command", "s1", proxy.CommandEvent{Verb: "XTND", Args: []string{"XMIT"}, OK: false, Octets: 7}},
	call{"Checkpoint", "s1", proxy.Counters{Duration: time.Second, BytesIn: 40, BytesOut: 1839, Retr: 2, Top: 1, Marked: []int{3}}},
	call{"Auth", "s2", proxy.AuthEvent{User: "bob", Mechanism: "USER", Code: "SYS/TEMP", Reason: "dial tcp 10.9.8.7:110: connection refused", Dial: 2 * time.Second, DialFailed: true}},
	call{"Auth", "s2", proxy.AuthEvent{User: "bob", Mechanism: "USER", Code: "IN-USE", Reason: "limit.user_sessions", Dial: 62500 * time.Microsecond}},
	call{"Policy", "s2", proxy.PolicyEvent{Rule: "limit.user_sessions", Verb: "AUTH", Key: "bob", Value: 1}},
	call{"Auth", "s2", proxy.AuthEvent{User: "bob", Mechanism: "USER", Code: "LOGIN-DELAY", Reason: "limit.login_delay"}},
	call{"Policy", "s2", proxy.PolicyEvent{Rule: "limit.login_delay", Verb: "AUTH", Key: "bob", Value: 300}},
	call{"Auth", "s2", proxy.AuthEvent{User: "bob", Mechanism: "USER", Code: "X-VENDOR/THING", Reason: "odd"}},
	call{"Auth", "s2", proxy.AuthEvent{User: "carol", Mechanism: "PLAIN", Reason: "space in username"}},
	call{"Policy", "s3", proxy.PolicyEvent{Rule: "limit.ip_sessions", Key: "192.0.2.7", Value: 4}},
	call{"SessionClose", "s3", proxy.CloseEvent{Reason: "limit"}},
	call{"SessionClose", "s1", proxy.CloseEvent{Counters: proxy.Counters{Retr: 2, Top: 1}, Reason: "quit", User: "alice", LoggedIn: true, Committed: true, Incomplete: true}},
	call{"SessionClose", "s2", proxy.CloseEvent{Reason: "timeout", User: "bob"}},
}

// scriptOpen is how many events of script precede the first SessionClose.
const scriptOpen = 23

func TestAuditorCounts(t *testing.T) {
	m := New()
	a := m.Auditor(nil)
	replay(a, script[:scriptOpen])

	compare(t, m, "popproxy_sessions_open", `
		# HELP popproxy_sessions_open Client sessions currently open, by listener and the listener's TLS mode (none, starttls, implicit).
		# TYPE popproxy_sessions_open gauge
		popproxy_sessions_open{listener="pop3",tls="starttls"} 2
		popproxy_sessions_open{listener="pop3s",tls="implicit"} 1
	`)
	replay(a, script[scriptOpen:])

	compare(t, m, "popproxy_sessions_open", `
		# HELP popproxy_sessions_open Client sessions currently open, by listener and the listener's TLS mode (none, starttls, implicit).
		# TYPE popproxy_sessions_open gauge
		popproxy_sessions_open{listener="pop3",tls="starttls"} 0
		popproxy_sessions_open{listener="pop3s",tls="implicit"} 0
	`)
	compare(t, m, "popproxy_sessions_total", `
		# HELP popproxy_sessions_total Client sessions opened, by listener and the listener's TLS mode (none, starttls, implicit).
		# TYPE popproxy_sessions_total counter
		popproxy_sessions_total{listener="pop3",tls="starttls"} 2
		popproxy_sessions_total{listener="pop3s",tls="implicit"} 1
	`)
	compare(t, m, "popproxy_session_closes_total", `
		# HELP popproxy_session_closes_total Client sessions closed, by reason (quit, timeout, client_gone, upstream_failed, limit, ...).
		# TYPE popproxy_session_closes_total counter
		popproxy_session_closes_total{reason="limit"} 1
		popproxy_session_closes_total{reason="quit"} 1
		popproxy_session_closes_total{reason="timeout"} 1
	`)
	compare(t, m, "popproxy_tls_handshakes_total", `
		# HELP popproxy_tls_handshakes_total Completed TLS handshakes with clients, by mode (implicit, starttls) and protocol version.
		# TYPE popproxy_tls_handshakes_total counter
		popproxy_tls_handshakes_total{mode="implicit",version="TLS 1.3"} 1
		popproxy_tls_handshakes_total{mode="starttls",version="TLS 1.2"} 1
	`)
	compare(t, m, "popproxy_logins_total", `
		# HELP popproxy_logins_total Login attempts, by result (ok, failed) and lower-cased response code (auth, sys/temp, in-use, login-delay, ...; none if there was none).
		# TYPE popproxy_logins_total counter
		popproxy_logins_total{reason="auth",result="failed"} 1
		popproxy_logins_total{reason="in-use",result="failed"} 1
		popproxy_logins_total{reason="login-delay",result="failed"} 1
		popproxy_logins_total{reason="none",result="failed"} 1
		popproxy_logins_total{reason="none",result="ok"} 1
		popproxy_logins_total{reason="other",result="failed"} 1
		popproxy_logins_total{reason="sys/perm",result="failed"} 0
		popproxy_logins_total{reason="sys/temp",result="failed"} 1
	`)
	compare(t, m, "popproxy_policy_refusals_total", `
		# HELP popproxy_policy_refusals_total Things the proxy refused itself, by rule (syntax, wrong_state, limit.ip_sessions, ...).
		# TYPE popproxy_policy_refusals_total counter
		popproxy_policy_refusals_total{rule="limit.ip_sessions"} 1
		popproxy_policy_refusals_total{rule="limit.login_delay"} 1
		popproxy_policy_refusals_total{rule="limit.user_sessions"} 1
		popproxy_policy_refusals_total{rule="syntax"} 1
	`)
	compare(t, m, "popproxy_limit_refusals_total", `
		# HELP popproxy_limit_refusals_total Refusals by a configured limit (the limit.* policy rules), by limit without the "limit." prefix.
		# TYPE popproxy_limit_refusals_total counter
		popproxy_limit_refusals_total{limit="ip_sessions"} 1
		popproxy_limit_refusals_total{limit="login_delay"} 1
		popproxy_limit_refusals_total{limit="user_sessions"} 1
	`)
	compare(t, m, "popproxy_upstream_dial_seconds", `
		# HELP popproxy_upstream_dial_seconds Time to connect to the upstream for a login, TLS and greeting included, whether or not it succeeded.
		# TYPE popproxy_upstream_dial_seconds histogram
		popproxy_upstream_dial_seconds_bucket{le="0.001"} 0
		popproxy_upstream_dial_seconds_bucket{le="0.0025"} 0
		popproxy_upstream_dial_seconds_bucket{le="0.005"} 0
		popproxy_upstream_dial_seconds_bucket{le="0.01"} 0
		popproxy_upstream_dial_seconds_bucket{le="0.025"} 0
		popproxy_upstream_dial_seconds_bucket{le="0.05"} 0
		popproxy_upstream_dial_seconds_bucket{le="0.1"} 1
		popproxy_upstream_dial_seconds_bucket{le="0.25"} 2
		popproxy_upstream_dial_seconds_bucket{le="0.5"} 3
		popproxy_upstream_dial_seconds_bucket{le="1"} 3
		popproxy_upstream_dial_seconds_bucket{le="2.5"} 4
		popproxy_upstream_dial_seconds_bucket{le="5"} 4
		popproxy_upstream_dial_seconds_bucket{le="10"} 4
		popproxy_upstream_dial_seconds_bucket{le="+Inf"} 4
		popproxy_upstream_dial_seconds_sum 2.8125
		popproxy_upstream_dial_seconds_count 4
	`)
	compare(t, m, "popproxy_upstream_failures_total", `
		# HELP popproxy_upstream_failures_total Logins for which the upstream could not be reached or spoke wrongly.
		# TYPE popproxy_upstream_failures_total counter
		popproxy_upstream_failures_total 1
	`)
	compare(t, m, "popproxy_incomplete_responses_total", `
		# HELP popproxy_incomplete_responses_total Responses cut short because the upstream failed mid-response.
		# TYPE popproxy_incomplete_responses_total counter
		popproxy_incomplete_responses_total 1
	`)

	// Commands: 11 verbs × 2 results exist from the start; check them all.
	wantCommands := map[[2]string]float64{
		{"STAT", "ok"}: 1, {"RETR", "ok"}: 2, {"DELE", "err"}: 1, {"TOP", "ok"}: 1, {"other", "err"}: 1,
	}
	wantBytes := map[string]float64{"STAT": 12, "RETR": 1500, "DELE": 20, "TOP": 300, "other": 7}
	if n := testutil.CollectAndCount(m.commands); n != 22 {
		t.Errorf("%d commands_total series, want 22", n)
	}
	if n := testutil.CollectAndCount(m.relayedBytes); n != 11 {
		t.Errorf("%d relayed_bytes_total series, want 11", n)
	}
	for _, v := range verbList {
		for _, r := range []string{"ok", "err"} {
			if got, want := testutil.ToFloat64(m.commands.WithLabelValues(v, r)), wantCommands[[2]string{v, r}]; got != want {
				t.Errorf("commands_total{verb=%q,result=%q} = %v, want %v", v, r, got, want)
			}
		}
		if got, want := testutil.ToFloat64(m.relayedBytes.WithLabelValues(v)), wantBytes[v]; got != want {
			t.Errorf("relayed_bytes_total{verb=%q} = %v, want %v", v, got, want)
		}
	}

	m.mu.Lock()
	left := len(m.open)
	m.mu.Unlock()
	if left != 0 {
		t.Errorf("%d sessions left in the open map", left)
	}
}

// compare checks one metric family of m's registry against want, in the text
// exposition format.
func compare(t *testing.T, m *Metrics, name, want string) {
	t.Helper()
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(dedent(want)), name); err != nil {
		t.Error(err)
	}
}

func dedent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(lines, "\n") + "\n"
}

// TestAuditorPassesOn checks that next sees every event unchanged and in
// order, and that Err is next's.
// TestRefusalSummaryCounts: a summary of refused connections counts as the
// refusals it stands for.
func TestRefusalSummaryCounts(t *testing.T) {
	m := New()
	a := m.Auditor(nil)
	a.Policy("", proxy.PolicyEvent{Rule: "limit.ip_connection_rate", Key: "192.0.2.1/32", Listener: "pop3", Count: 1})
	a.Policy("", proxy.PolicyEvent{Rule: "limit.ip_connection_rate", Key: "192.0.2.1/32", Listener: "pop3", Count: 1945})
	if got, err := gatherValue(m, "popproxy_limit_refusals_total"); err != nil || got != 1946 {
		t.Fatalf("popproxy_limit_refusals_total = %v, %v; want 1946", got, err)
	}
}

func TestAuditorPassesOn(t *testing.T) {
	next := &recorder{}
	a := New().Auditor(next)
	replay(a, script)
	if !reflect.DeepEqual(next.events, script) {
		t.Errorf("next received\n%+v\nwant\n%+v", next.events, script)
	}

	if err := a.Err(); err != nil {
		t.Errorf("Err() = %v, want nil", err)
	}
	next.err = errors.New("audit: disk full")
	if err := a.Err(); err != next.err {
		t.Errorf("Err() = %v, want next's %v", err, next.err)
	}
}

// TestAuditorNilNext checks that a nil next is allowed.
func TestAuditorNilNext(t *testing.T) {
	a := New().Auditor(nil)
	replay(a, script)
	if err := a.Err(); err != nil {
		t.Errorf("Err() = %v", err)
	}
}

// TestSessionsOpen checks that the gauge follows sessions up and down under
// concurrency, and that a close without an open, or a second close, does not
// take it below zero.
func TestSessionsOpen(t *testing.T) {
	m := New()
	a := m.Auditor(nil)
	g := m.sessionsOpen.WithLabelValues("pop3", "none")
	const n = 50
	var opened, closed sync.WaitGroup
	release := make(chan struct{})
	for i := range n {
		opened.Add(1)
		closed.Add(1)
		go func() {
			defer closed.Done()
			id := fmt.Sprintf("c%d", i)
			a.SessionOpen(proxy.SessionInfo{ID: id, Listener: "pop3", TLSMode: "none"})
			opened.Done()
			<-release
			a.SessionClose(id, proxy.CloseEvent{Reason: "quit"})
		}()
	}
	opened.Wait()
	if got := testutil.ToFloat64(g); got != n {
		t.Errorf("sessions_open = %v with %d sessions open", got, n)
	}
	close(release)
	closed.Wait()
	if got := testutil.ToFloat64(g); got != 0 {
		t.Errorf("sessions_open = %v after all closed", got)
	}

	a.SessionOpen(proxy.SessionInfo{ID: "x", Listener: "pop3", TLSMode: "none"})
	a.SessionClose("x", proxy.CloseEvent{Reason: "quit"})
	a.SessionClose("x", proxy.CloseEvent{Reason: "quit"})
	a.SessionClose("never-opened", proxy.CloseEvent{Reason: "quit"})
	if got := testutil.ToFloat64(g); got != 0 {
		t.Errorf("sessions_open = %v after stray closes", got)
	}
	if got := testutil.ToFloat64(m.sessionCloses.WithLabelValues("quit")); got != n+3 {
		t.Errorf("session_closes_total{reason=quit} = %v, want %d", got, n+3)
	}
	if len(m.open) != 0 {
		t.Errorf("open map holds %d sessions", len(m.open))
	}
}

// TestBadLabelValues checks that invalid UTF-8 from configuration cannot
// make the Auditor panic.
func TestBadLabelValues(t *testing.T) {
	m := New()
	a := m.Auditor(nil)
	a.SessionOpen(proxy.SessionInfo{ID: "b", Listener: "bad\xff", TLSMode: "none"})
	a.Policy("b", proxy.PolicyEvent{Rule: "limit.\xfe"})
	a.SessionClose("b", proxy.CloseEvent{Reason: "\xff"})
	if got := testutil.ToFloat64(m.sessionsOpen.WithLabelValues("bad\uFFFD", "none")); got != 0 {
		t.Errorf("sessions_open = %v", got)
	}
	if got := testutil.ToFloat64(m.limitRefusals.WithLabelValues("\uFFFD")); got != 1 {
		t.Errorf("limit_refusals_total = %v", got)
	}
}

func TestScrapeFuncs(t *testing.T) {
	m := New()
	// Unset: not exported at all.
	for _, name := range []string{
		"popproxy_tls_certificate_expiry_timestamp_seconds",
		"popproxy_audit_write_failures_total",
		"popproxy_upstream_circuit_open",
		"popproxy_panics_total",
	} {
		if n, err := testutil.GatherAndCount(m.reg, name); err != nil || n != 0 {
			t.Errorf("%s: %d series, %v; want none before it is registered", name, n, err)
		}
	}

	var failures atomic.Int64
	m.AuditFailures(failures.Load)
	m.CertExpiry(func() map[string]time.Time {
		return map[string]time.Time{
			"mail.example.org": time.Unix(1767225600, 0),
			"pop.example.net":  time.Unix(1767225600, 500_000_000),
		}
	})
	m.Circuits(func() []CircuitState {
		return []CircuitState{
			{Upstream: "dovecot", Address: "10.0.0.1:995", Open: false},
			{Upstream: "dovecot", Address: "10.0.0.2:995", Open: true},
			{Upstream: "legacy", Address: "10.0.1.1:110", Open: true},
			{Upstream: "legacy", Address: "10.0.1.1:110", Open: false}, // duplicate: open wins
		}
	})
	m.Panics(func() int64 { return 2 })
	failures.Store(3)
	compare(t, m, "popproxy_panics_total", `
		# HELP popproxy_panics_total Panics recovered: each ended one session (or one piece of background work), not the process. Any is a bug worth reporting.
		# TYPE popproxy_panics_total counter
		popproxy_panics_total 2
	`)
	compare(t, m, "popproxy_audit_write_failures_total", `
		# HELP popproxy_audit_write_failures_total Audit log writes that failed.
		# TYPE popproxy_audit_write_failures_total counter
		popproxy_audit_write_failures_total 3
	`)
	compare(t, m, "popproxy_tls_certificate_expiry_timestamp_seconds", `
		# HELP popproxy_tls_certificate_expiry_timestamp_seconds When each TLS certificate the proxy serves expires (NotAfter), in Unix seconds.
		# TYPE popproxy_tls_certificate_expiry_timestamp_seconds gauge
		popproxy_tls_certificate_expiry_timestamp_seconds{name="mail.example.org"} 1.7672256e+09
		popproxy_tls_certificate_expiry_timestamp_seconds{name="pop.example.net"} 1.7672256005e+09
	`)
	compare(t, m, "popproxy_upstream_circuit_open", `
		# HELP popproxy_upstream_circuit_open Whether an upstream address's circuit breaker is open (1) or closed (0).
		# TYPE popproxy_upstream_circuit_open gauge
		popproxy_upstream_circuit_open{address="10.0.0.1:995",upstream="dovecot"} 0
		popproxy_upstream_circuit_open{address="10.0.0.2:995",upstream="dovecot"} 1
		popproxy_upstream_circuit_open{address="10.0.1.1:110",upstream="legacy"} 1
	`)

	// Replacing and removing.
	m.AuditFailures(func() int64 { return 7 })
	if got, err := gatherValue(m, "popproxy_audit_write_failures_total"); err != nil || got != 7 {
		t.Errorf("after replacing: %v, %v", got, err)
	}
	m.AuditFailures(nil)
	if n, _ := testutil.GatherAndCount(m.reg, "popproxy_audit_write_failures_total"); n != 0 {
		t.Errorf("after removing: %d series", n)
	}
}

func gatherValue(m *Metrics, name string) (float64, error) {
	mfs, err := m.reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			if c := mf.Metric[0].GetCounter(); c != nil {
				return c.GetValue(), nil
			}
			return mf.Metric[0].GetGauge().GetValue(), nil
		}
	}
	return 0, fmt.Errorf("%s not found", name)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestHandler(t *testing.T) {
	m := New()
	replay(m.Auditor(nil), script)
	m.AuditFailures(func() int64 { return 2 })
	m.CertExpiry(func() map[string]time.Time {
		return map[string]time.Time{"mail.example.org": time.Unix(1767225600, 0), "bad\xffname": time.Unix(1, 0)}
	})
	m.Circuits(func() []CircuitState {
		return []CircuitState{{Upstream: "dovecot", Address: "10.0.0.2:995", Open: true}}
	})

	var notReady atomic.Pointer[error]
	srv := httptest.NewServer(m.Handler(func() error {
		if p := notReady.Load(); p != nil {
			return *p
		}
		return nil
	}))
	defer srv.Close()

	code, body := get(t, srv.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, line := range []string{
		`popproxy_sessions_total{listener="pop3",tls="starttls"} 2`,
		`popproxy_sessions_open{listener="pop3s",tls="implicit"} 0`,
		`popproxy_session_closes_total{reason="quit"} 1`,
		`popproxy_tls_handshakes_total{mode="implicit",version="TLS 1.3"} 1`,
		`popproxy_logins_total{reason="auth",result="failed"} 1`,
		`popproxy_logins_total{reason="none",result="ok"} 1`,
		`popproxy_logins_total{reason="sys/temp",result="failed"} 1`,
		`popproxy_policy_refusals_total{rule="limit.ip_sessions"} 1`,
		`popproxy_limit_refusals_total{limit="ip_sessions"} 1`,
		`popproxy_commands_total{result="ok",verb="RETR"} 2`,
		`popproxy_commands_total{result="err",verb="other"} 1`,
		`popproxy_commands_total{result="ok",verb="QUIT"} 0`,
		`popproxy_relayed_bytes_total{verb="RETR"} 1500`,
		`popproxy_upstream_dial_seconds_bucket{le="0.001"} 0`,
		`popproxy_upstream_dial_seconds_bucket{le="10"} 4`,
		`popproxy_upstream_dial_seconds_count 4`,
		`popproxy_upstream_failures_total 1`,
		`popproxy_incomplete_responses_total 1`,
		`popproxy_audit_write_failures_total 2`,
		`popproxy_tls_certificate_expiry_timestamp_seconds{name="mail.example.org"} 1.7672256e+09`,
		`popproxy_upstream_circuit_open{address="10.0.0.2:995",upstream="dovecot"} 1`,
		`# TYPE go_goroutines gauge`,
		`# TYPE process_start_time_seconds gauge`,
	} {
		if !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("/metrics lacks the line\n\t%s", line)
		}
	}
	// The certificate name that is not valid UTF-8 is left out and counted,
	// which the next scrape shows.
	if _, body := get(t, srv.URL+"/metrics"); !strings.Contains(body, "\n"+`promhttp_metric_handler_errors_total{cause="gathering"} 1`+"\n") {
		t.Errorf("an invalid series was not counted as a gathering error")
	}
	// Privacy and cardinality: no user, client address, upstream dial
	// target from an error, or limit key as a label value.
	for _, secret := range []string{"alice", "bob", "carol", "192.0.2.7", "198.51.100.1", "10.9.8.7", "example.org>", "XTND"} {
		if strings.Contains(body, secret) {
			t.Errorf("/metrics contains %q", secret)
		}
	}

	if code, body := get(t, srv.URL+"/healthz"); code != http.StatusOK || body != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != http.StatusOK || body != "ok" {
		t.Errorf("/readyz while ready: %d %q", code, body)
	}
	err := errors.New("audit log unwritable: disk full")
	notReady.Store(&err)
	if code, body := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable || body != err.Error() {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	if code, body := get(t, srv.URL+"/healthz"); code != http.StatusOK || body != "ok" {
		t.Errorf("/healthz while not ready: %d %q", code, body)
	}
	notReady.Store(nil)
	if code, _ := get(t, srv.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz ready again: %d", code)
	}
	if code, _ := get(t, srv.URL+"/"); code != http.StatusNotFound {
		t.Errorf("/: %d, want 404", code)
	}
	resp, perr := http.Post(srv.URL+"/metrics", "text/plain", nil)
	if perr != nil {
		t.Fatal(perr)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d, want 405", resp.StatusCode)
	}
}

// TestHandlerNilReady checks that a nil ready function means always ready.
func TestHandlerNilReady(t *testing.T) {
	srv := httptest.NewServer(New().Handler(nil))
	defer srv.Close()
	if code, body := get(t, srv.URL+"/readyz"); code != http.StatusOK || body != "ok" {
		t.Errorf("/readyz: %d %q", code, body)
	}
}

// TestNewIndependent checks that each Metrics has its own registry, so two
// can coexist (tests, or two servers in one process) and the global
// registry is untouched.
func TestNewIndependent(t *testing.T) {
	a, b := New(), New()
	a.Auditor(nil).Policy("x", proxy.PolicyEvent{Rule: "syntax"})
	if got := testutil.ToFloat64(b.policyRefusals.WithLabelValues("syntax")); got != 0 {
		t.Errorf("second Metrics sees the first's event: %v", got)
	}
	a.Handler(nil)
	a.Handler(nil) // registering the handler's own metrics twice must not panic
}

func TestSharedLimits(t *testing.T) {
	m := New()
	if n, err := testutil.GatherAndCount(m.reg, "popproxy_shared_limits_unavailable"); err != nil || n != 0 {
		t.Errorf("without limits.shared: %d series, %v; want none", n, err)
	}
	m.SharedLimits(func() SharedLimitsState {
		return SharedLimitsState{Requests: 4, Errors: 1, RoundTrip: 2 * time.Millisecond, Unavailable: true}
	})
	compare(t, m, "popproxy_shared_limits_round_trip_seconds", `
		# HELP popproxy_shared_limits_round_trip_seconds Round trips to the store of the fleet-wide limits (limits.shared), failed ones included, and their time.
		# TYPE popproxy_shared_limits_round_trip_seconds summary
		popproxy_shared_limits_round_trip_seconds_sum 0.002
		popproxy_shared_limits_round_trip_seconds_count 4
	`)
	compare(t, m, "popproxy_shared_limits_errors_total", `
		# HELP popproxy_shared_limits_errors_total Round trips to the store of the fleet-wide limits that failed or timed out.
		# TYPE popproxy_shared_limits_errors_total counter
		popproxy_shared_limits_errors_total 1
	`)
	compare(t, m, "popproxy_shared_limits_unavailable", `
		# HELP popproxy_shared_limits_unavailable 1 while the store of the fleet-wide limits does not answer and limits.shared.on_unavailable applies, else 0.
		# TYPE popproxy_shared_limits_unavailable gauge
		popproxy_shared_limits_unavailable 1
	`)
}

// TestVerbLabels checks that the verb labels are the proxy's verb table's
// TRANSACTION verbs, and "other".
func TestVerbLabels(t *testing.T) {
	want := append(proxy.TransactionVerbs(), "other")
	if !reflect.DeepEqual(verbList, want) {
		t.Errorf("verbList = %v, want %v", verbList, want)
	}
	m := New()
	for _, v := range proxy.TransactionVerbs() {
		if got, want := m.verb(strings.ToLower(v)), m.verbs[v]; got != want || got.ok == nil {
			t.Errorf("verb(%q) is not %s's series", strings.ToLower(v), v)
		}
	}
	if m.verb("XFOO") != m.verbs[verbOther] {
		t.Error(`verb("XFOO") is not the "other" series`)
	}
}
