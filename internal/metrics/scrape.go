package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// scrapeCollector exports what is read at scrape time from functions the
// caller registers (Metrics.CertExpiry, AuditFailures, Circuits). An unset
// function exports nothing.
type scrapeCollector struct {
	certExpiryDesc    *prometheus.Desc
	auditFailuresDesc *prometheus.Desc
	circuitDesc       *prometheus.Desc
	panicsDesc        *prometheus.Desc
	sharedRTTDesc     *prometheus.Desc
	sharedErrorsDesc  *prometheus.Desc
	sharedDownDesc    *prometheus.Desc

	mu            sync.Mutex // guards the functions, not their calls
	certExpiry    func() map[string]time.Time
	auditFailures func() int64
	circuits      func() []CircuitState
	panics        func() int64
	sharedLimits  func() SharedLimitsState
}

var _ prometheus.Collector = (*scrapeCollector)(nil)

func newScrapeCollector() *scrapeCollector {
	return &scrapeCollector{
		certExpiryDesc: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "tls", "certificate_expiry_timestamp_seconds"),
			"When each TLS certificate the proxy serves expires (NotAfter), in Unix seconds.",
			[]string{"name"}, nil),
		auditFailuresDesc: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "audit", "write_failures_total"),
			"Audit log writes that failed.",
			nil, nil),
		circuitDesc: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "upstream", "circuit_open"),
			"Whether an upstream address's circuit breaker is open (1) or closed (0).",
			[]string{"upstream", "address"}, nil),
		panicsDesc: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "", "panics_total"),
			"Panics recovered: each ended one session (or one piece of background work), not the process. Any is a bug worth reporting.",
			nil, nil),
		sharedRTTDesc: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "shared_limits", "round_trip_seconds"),
			"Round trips to the store of the fleet-wide limits (limits.shared), failed ones included, and their time.",
			nil, nil),
		sharedErrorsDesc: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "shared_limits", "errors_total"),
			"Round trips to the store of the fleet-wide limits that failed or timed out.",
			nil, nil),
		sharedDownDesc: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "shared_limits", "unavailable"),
			"1 while the store of the fleet-wide limits does not answer and limits.shared.on_unavailable applies, else 0.",
			nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.certExpiryDesc
	ch <- c.auditFailuresDesc
	ch <- c.circuitDesc
	ch <- c.panicsDesc
	ch <- c.sharedRTTDesc
	ch <- c.sharedErrorsDesc
	ch <- c.sharedDownDesc
}

// Collect implements prometheus.Collector. The functions are called without
// the lock held, so a slow one does not hold up their replacement.
func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	certExpiry, auditFailures, circuits, panics := c.certExpiry, c.auditFailures, c.circuits, c.panics
	sharedLimits := c.sharedLimits
	c.mu.Unlock()

	if sharedLimits != nil {
		st := sharedLimits()
		ch <- prometheus.MustNewConstSummary(c.sharedRTTDesc, uint64(st.Requests), st.RoundTrip.Seconds(), nil)
		ch <- constMetric(c.sharedErrorsDesc, prometheus.CounterValue, float64(st.Errors))
		down := 0.0
		if st.Unavailable {
			down = 1
		}
		ch <- constMetric(c.sharedDownDesc, prometheus.GaugeValue, down)
	}
	if panics != nil {
		ch <- constMetric(c.panicsDesc, prometheus.CounterValue, float64(panics()))
	}
	if certExpiry != nil {
		for name, t := range certExpiry() {
			ch <- constMetric(c.certExpiryDesc, prometheus.GaugeValue, float64(t.UnixNano())/1e9, name)
		}
	}
	if auditFailures != nil {
		ch <- constMetric(c.auditFailuresDesc, prometheus.CounterValue, float64(auditFailures()))
	}
	if circuits != nil {
		type key struct{ upstream, address string }
		open := make(map[key]bool)
		var order []key
		for _, cs := range circuits() {
			k := key{cs.Upstream, cs.Address}
			was, seen := open[k]
			if !seen {
				order = append(order, k)
			}
			open[k] = was || cs.Open
		}
		for _, k := range order {
			v := 0.0
			if open[k] {
				v = 1
			}
			ch <- constMetric(c.circuitDesc, prometheus.GaugeValue, v, k.upstream, k.address)
		}
	}
}

// constMetric is prometheus.MustNewConstMetric without the panic: a label
// value that is not valid UTF-8 spoils that one series, which promhttp then
// leaves out and counts, not the process.
func constMetric(desc *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(desc, t, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}
