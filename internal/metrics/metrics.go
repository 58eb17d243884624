// Package metrics exposes popproxy's Prometheus metrics.
//
// Everything the proxy does reaches the metrics through the same
// proxy.Auditor events the audit log receives, so the proxy itself never
// imports Prometheus. State that lives elsewhere (certificate expiry, audit
// write failures, upstream circuit breakers) is read at scrape time through
// functions the caller registers.
//
// Labels are bounded and never carry a username or a client address: verbs
// outside RFC 1939/2449 become "other", unknown response codes become
// "other", and rules, close reasons, listener names and TLS modes are fixed by
// the proxy or its configuration.
//
// Typical usage:
//
//	m := metrics.New()
//	m.AuditFailures(auditLog.Failures)  // *audit.Log
//	opts.Auditor = m.Auditor(auditLog) // metrics first, then the audit log
//	srv := proxy.New(opts)
//	go http.ListenAndServe(metricsAddr, m.Handler(auditLog.Err)) // not ready while audit writes fail
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "popproxy"

// Metrics holds popproxy's Prometheus metrics in a registry of its own (never
// the global one), together with the Go runtime and process collectors. The
// zero value is not usable; call New. It is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	sessionsOpen    *prometheus.GaugeVec   // listener, tls
	sessionsTotal   *prometheus.CounterVec // listener, tls
	sessionCloses   *prometheus.CounterVec // reason
	tlsHandshakes   *prometheus.CounterVec // mode, version
	logins          *prometheus.CounterVec // result, reason
	policyRefusals  *prometheus.CounterVec // rule
	limitRefusals   *prometheus.CounterVec // limit
	commands        *prometheus.CounterVec // verb, result
	relayedBytes    *prometheus.CounterVec // verb
	verbs           map[string]verbCounters
	dialSeconds     prometheus.Histogram
	upstreamFailed  prometheus.Counter
	incompleteResps prometheus.Counter

	mu   sync.Mutex
	open map[string]prometheus.Gauge // session id → its sessions_open child; live sessions only

	scrape *scrapeCollector
}

// verbCounters are one verb's series, resolved once: a command is counted
// without hashing label values.
type verbCounters struct{ ok, err, bytes prometheus.Counter }

// dialBuckets cover 1 ms to 10 s: a local Dovecot answers in about a
// millisecond, a remote one over TLS in tens, a struggling one in seconds.
var dialBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New returns the metrics, registered in a new registry.
func New() *Metrics {
	m := &Metrics{
		reg:  prometheus.NewRegistry(),
		open: make(map[string]prometheus.Gauge),
		sessionsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sessions_open",
			Help: "Client sessions currently open, by listener and the listener's TLS mode (none, starttls, implicit).",
		}, []string{"listener", "tls"}),
		sessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sessions_total",
			Help: "Client sessions opened, by listener and the listener's TLS mode (none, starttls, implicit).",
		}, []string{"listener", "tls"}),
		sessionCloses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_closes_total",
			Help: "Client sessions closed, by reason (quit, timeout, client_gone, upstream_failed, limit, ...).",
		}, []string{"reason"}),
		tlsHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "tls_handshakes_total",
			Help: "Completed TLS handshakes with clients, by mode (implicit, starttls) and protocol version.",
		}, []string{"mode", "version"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "logins_total",
			Help: "Login attempts, by result (ok, failed) and lower-cased response code (auth, sys/temp, in-use, login-delay, ...; none if there was none).",
		}, []string{"result", "reason"}),
		policyRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "policy_refusals_total",
			Help: "Things the proxy refused itself, by rule (syntax, wrong_state, limit.ip_sessions, ...).",
		}, []string{"rule"}),
		limitRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "limit_refusals_total",
			Help: "Refusals by a configured limit (the limit.* policy rules), by limit without the \"limit.\" prefix.",
		}, []string{"limit"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "commands_total",
			Help: "TRANSACTION commands relayed, by verb (other for verbs outside RFC 1939/2449) and result (ok, err).",
		}, []string{"verb", "result"}),
		relayedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "relayed_bytes_total",
			Help: "Response octets relayed to clients, status lines included, by verb.",
		}, []string{"verb"}),
		dialSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "upstream_dial_seconds",
			Help:    "Time to connect to the upstream for a login, TLS and greeting included, whether or not it succeeded.",
			Buckets: dialBuckets,
		}),
		upstreamFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_failures_total",
			Help: "Logins for which the upstream could not be reached or spoke wrongly.",
		}),
		incompleteResps: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "incomplete_responses_total",
			Help: "Responses cut short because the upstream failed mid-response.",
		}),
		scrape: newScrapeCollector(),
	}
	// Series that should read 0 rather than be missing before their first
	// event, so that rate() and alerts work from the start. Only bounded sets.
	m.verbs = make(map[string]verbCounters, len(verbList))
	for _, v := range verbList {
		m.verbs[v] = verbCounters{
			ok:    m.commands.WithLabelValues(v, "ok"),
			err:   m.commands.WithLabelValues(v, "err"),
			bytes: m.relayedBytes.WithLabelValues(v),
		}
	}
	m.logins.WithLabelValues("ok", "none")
	for _, c := range failureCodes {
		m.logins.WithLabelValues("failed", c)
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.sessionsOpen, m.sessionsTotal, m.sessionCloses, m.tlsHandshakes,
		m.logins, m.policyRefusals, m.limitRefusals, m.commands, m.relayedBytes,
		m.dialSeconds, m.upstreamFailed, m.incompleteResps,
		m.scrape,
	)
	return m
}

// CertExpiry makes f the source of
// popproxy_tls_certificate_expiry_timestamp_seconds{name}: one series per
// map entry, the key as name (a certificate's name, such as its first DNS
// name) and the NotAfter time as the value in Unix seconds. f is called at
// each scrape, possibly concurrently, and must not block for long. Calling
// CertExpiry again replaces f; with f nil the metric is not exported.
func (m *Metrics) CertExpiry(f func() map[string]time.Time) {
	m.scrape.mu.Lock()
	m.scrape.certExpiry = f
	m.scrape.mu.Unlock()
}

// AuditFailures makes f the source of the counter
// popproxy_audit_write_failures_total: f returns how many audit writes have
// failed since the process started, a count that never goes down. f is called
// at each scrape, possibly concurrently. Calling AuditFailures again replaces
// f; with f nil the metric is not exported.
func (m *Metrics) AuditFailures(f func() int64) {
	m.scrape.mu.Lock()
	m.scrape.auditFailures = f
	m.scrape.mu.Unlock()
}

// Panics makes f the source of the counter popproxy_panics_total: f returns
// how many panics the proxy has recovered from (proxy.Server.Panics). f is
// called at each scrape, possibly concurrently. Calling Panics again replaces
// f; with f nil the metric is not exported.
func (m *Metrics) Panics(f func() int64) {
	m.scrape.mu.Lock()
	m.scrape.panics = f
	m.scrape.mu.Unlock()
}

// CircuitState is one upstream address's circuit breaker, as reported to
// Circuits.
type CircuitState struct {
	Upstream string // the upstream's configured name
	Address  string // host:port from the configuration, never a client's
	Open     bool   // the breaker is open: the address is not being tried
}

// Circuits makes f the source of the gauge
// popproxy_upstream_circuit_open{upstream,address}: 1 for an open breaker, 0
// for a closed one. Both labels come from the configuration, so their number
// is bounded. If f returns the same upstream and address twice, the circuit
// counts as open if either says so. f is called at each scrape, possibly
// concurrently. Calling Circuits again replaces f; with f nil the metric is
// not exported.
func (m *Metrics) Circuits(f func() []CircuitState) {
	m.scrape.mu.Lock()
	m.scrape.circuits = f
	m.scrape.mu.Unlock()
}

// SharedLimitsState is the store of the fleet-wide limits, as reported to
// SharedLimits: counts since the process started.
type SharedLimitsState struct {
	Requests, Errors int64         // round trips, and the failed ones among them
	RoundTrip        time.Duration // the time of all round trips, summed
	Unavailable      bool          // the store is not answering now
}

// SharedLimits makes f the source of the summary
// popproxy_shared_limits_round_trip_seconds (count and sum: the mean round
// trip is rate(_sum) / rate(_count)), the counter
// popproxy_shared_limits_errors_total and the gauge
// popproxy_shared_limits_unavailable. f is called at each scrape, possibly
// concurrently. Calling SharedLimits again replaces f; with f nil the
// metrics are not exported.
func (m *Metrics) SharedLimits(f func() SharedLimitsState) {
	m.scrape.mu.Lock()
	m.scrape.sharedLimits = f
	m.scrape.mu.Unlock()
}

// Handler returns the HTTP handler of the metrics listener:
//
//   - /metrics: the registry in the Prometheus exposition formats (promhttp);
//     a failing metric is left out and counted in
//     promhttp_metric_handler_errors_total rather than failing the scrape;
//   - /healthz: 200 "ok" for as long as the process serves HTTP (liveness);
//   - /readyz: 200 "ok" if ready returns nil, else 503 with the error's text
//     (readiness). If ready is nil, /readyz always answers 200.
//
// Anything else is 404. Handler may be called more than once.
func (m *Metrics) Handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(m.reg,
		promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
			Registry:      m.reg,
			ErrorHandling: promhttp.ContinueOnError,
		})))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.Handle("GET /readyz", readyHandler(ready))
	return mux
}

// readyHandler answers /readyz from ready.
type readyHandler func() error

func (ready readyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if ready != nil {
		if err := ready(); err != nil {
			writeText(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	writeText(w, http.StatusOK, "ok")
}

func writeText(w http.ResponseWriter, code int, text string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write([]byte(text))
}
