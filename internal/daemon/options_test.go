package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/popproxy/popproxy/internal/config"
)

// TestXClientBehindSTLSWarns: behind STLS XCLIENT is sent only if CAPA
// lists it under TLS, and Dovecot 2.3 offers it only in its plaintext
// greeting, so the combination is logged at start.
func TestXClientBehindSTLSWarns(t *testing.T) {
	for upstream, warn := range map[string]bool{
		"{address: 127.0.0.1:2, tls: starttls, send_client: xclient}": true,
		"{address: 127.0.0.1:2, tls: implicit, send_client: xclient}": false,
	} {
		cfg, err := config.Parse([]byte("listeners: [{name: a, address: 127.0.0.1:1}]\nupstream: " + upstream))
		if err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		if _, err := proxyUpstreams(cfg, slog.New(slog.NewTextHandler(&log, nil))); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(log.String(), "send_client xclient with tls starttls"); got != warn {
			t.Errorf("upstream %s: warned %v, want %v:\n%s", upstream, got, warn, log.String())
		}
	}
}
