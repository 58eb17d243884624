package metrics

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/popproxy/popproxy/proxy"
)

// The examples these tests check, shipped for admins to load.
const (
	alertsFile     = "../../examples/prometheus/alerts.yml"
	alertTestsFile = "../../examples/prometheus/alerts_test.yml"
	dashboardFile  = "../../examples/grafana/popproxy.json"
)

// exposed returns the metric names a query can use, with their label names:
// every metric this package exports, each given a value first (a vector
// without children is not exported), and a histogram's _bucket, _sum and
// _count series.
func exposed(t *testing.T) map[string][]string {
	t.Helper()
	m := New()
	m.CertExpiry(func() map[string]time.Time { return map[string]time.Time{"mail.example.com": time.Now()} })
	m.AuditFailures(func() int64 { return 0 })
	m.Panics(func() int64 { return 0 })
	m.Circuits(func() []CircuitState { return []CircuitState{{Upstream: "store", Address: "10.0.0.5:995"}} })
	a := m.Auditor(nil)
	a.SessionOpen(proxy.SessionInfo{ID: "s", Listener: "pop3", TLSMode: "starttls"})
	a.TLS("s", proxy.TLSEvent{Mode: "starttls", Version: "TLS 1.3"})
	a.Auth("s", proxy.AuthEvent{OK: false, Code: "SYS/TEMP", Dial: time.Millisecond, DialFailed: true})
	a.Command("s", proxy.CommandEvent{Verb: "RETR", OK: true, Octets: 100, Incomplete: true})
	a.Policy("s", proxy.PolicyEvent{Rule: "limit.ip_sessions"})
	a.SessionClose("s", proxy.CloseEvent{Reason: "quit"})
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string][]string{}
	for _, f := range families {
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		names[f.GetName()] = labels
		if f.GetType().String() == "HISTOGRAM" {
			names[f.GetName()+"_bucket"] = append(slices.Clone(labels), "le")
			names[f.GetName()+"_sum"] = labels
			names[f.GetName()+"_count"] = labels
		}
	}
	return names
}

var (
	metricName = regexp.MustCompile(`\bpopproxy_[a-z0-9_]+`)
	selector   = regexp.MustCompile(`\b(popproxy_[a-z0-9_]+)\{([^}]*)\}`)
	matcher    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	grouping   = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// targetLabels are added by Prometheus to every series it scrapes.
var targetLabels = []string{"instance", "job"}

// checkQuery reports the metrics and labels expr names that popproxy does
// not export, and returns the metrics it uses.
func checkQuery(t *testing.T, where, expr string, metrics map[string][]string) []string {
	t.Helper()
	used := metricName.FindAllString(expr, -1)
	var labels []string // of the metrics used
	for _, name := range used {
		l, ok := metrics[name]
		if !ok {
			t.Errorf("%s: %s is not a metric of internal/metrics: %s", where, name, expr)
		}
		labels = append(labels, l...)
	}
	for _, sel := range selector.FindAllStringSubmatch(expr, -1) {
		for _, m := range matcher.FindAllStringSubmatch(sel[2], -1) {
			if !slices.Contains(metrics[sel[1]], m[1]) && !slices.Contains(targetLabels, m[1]) {
				t.Errorf("%s: %s has no label %s: %s", where, sel[1], m[1], expr)
			}
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !slices.Contains(labels, l) && !slices.Contains(targetLabels, l) {
				t.Errorf("%s: no metric in it has the label %s: %s", where, l, expr)
			}
		}
	}
	return used
}

// promtool runs Prometheus's promtool, which the test suite needs
// (.ci/install-test-tools installs it).
func promtool(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install it with `apt-get install -y prometheus` (as .ci/install-test-tools does)")
	}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestPrometheusAlerts checks examples/prometheus/alerts.yml with promtool,
// runs its unit tests, and checks that it uses only metrics popproxy exports
// and covers what an admin must hear about.
func TestPrometheusAlerts(t *testing.T) {
	promtool(t, "check", "rules", alertsFile)
	promtool(t, "test", "rules", alertTestsFile)

	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	metrics := exposed(t)
	var used []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			used = append(used, checkQuery(t, r.Alert, r.Expr, metrics)...)
		}
	}
	for _, want := range []string{
		"popproxy_audit_write_failures_total", "popproxy_upstream_circuit_open",
		"popproxy_tls_certificate_expiry_timestamp_seconds", "popproxy_limit_refusals_total",
		"popproxy_upstream_failures_total", "popproxy_panics_total",
	} {
		if !slices.Contains(used, want) {
			t.Errorf("no alert on %s", want)
		}
	}
}

// TestGrafanaDashboard checks that examples/grafana/popproxy.json is a
// dashboard whose panels query only metrics popproxy exports, and show what
// an admin looks for.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("not a dashboard: title %q, uid %q, %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	metrics := exposed(t)
	ids := map[int]bool{}
	var used []string
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("panel %d: title %q, %d queries", p.ID, p.Title, len(p.Targets))
		}
		for _, q := range p.Targets {
			used = append(used, checkQuery(t, p.Title, q.Expr, metrics)...)
		}
	}
	for _, want := range []string{
		"popproxy_sessions_open", "popproxy_logins_total", "popproxy_relayed_bytes_total",
		"popproxy_upstream_dial_seconds_bucket", "popproxy_policy_refusals_total", "popproxy_tls_handshakes_total",
	} {
		if !slices.Contains(used, want) {
			t.Errorf("no panel shows %s", want)
		}
	}
}
