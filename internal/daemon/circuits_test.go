package daemon

import (
	"log/slog"
	"os"
	"slices"
	"testing"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/metrics"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/proxy"
)

// TestCircuitsFollowReload: the circuit metric lists the upstreams of the
// configuration in effect, not those the process started with.
func TestCircuitsFollowReload(t *testing.T) {
	const before = "listeners: [{name: a, address: 127.0.0.1:1}]\n" +
		"upstreams: [{name: one, addresses: [127.0.0.1:2, 127.0.0.1:3]}]\nroutes: {default: one}\n"
	const after = "listeners: [{name: a, address: 127.0.0.1:1}]\n" +
		"upstreams: [{name: one, addresses: [127.0.0.1:4]}, {name: two, addresses: [127.0.0.1:5]}]\nroutes: {default: two}\n"
	path := testproc.WriteConfig(t, before)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	opts, err := serverOptions(cfg, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.New(opts)
	states := circuits(opts.Router, opts.Breaker)
	want := []metrics.CircuitState{{Upstream: "one", Address: "127.0.0.1:2"}, {Upstream: "one", Address: "127.0.0.1:3"}}
	if got := states(); !slices.Equal(got, want) {
		t.Errorf("at start: %v, want %v", got, want)
	}
	if err := os.WriteFile(path, []byte(after), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := reloadConfig(path, srv, opts.Router); err != nil {
		t.Fatal(err)
	}
	want = []metrics.CircuitState{{Upstream: "one", Address: "127.0.0.1:4"}, {Upstream: "two", Address: "127.0.0.1:5"}}
	if got := states(); !slices.Equal(got, want) {
		t.Errorf("after reload: %v, want %v", got, want)
	}
}
