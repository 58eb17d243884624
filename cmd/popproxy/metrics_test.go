package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testproc"
)

// TestMetricsEndpoint runs a known sequence of sessions through the binary
// and scrapes the admin listener.
func TestMetricsEndpoint(t *testing.T) {
	bin := buildBinary(t)
	drop := startDrop(t, map[string]string{"u": "p"})
	addr, admin := freeAddr(t), freeAddr(t)
	cfg := testproc.WriteConfig(t, fmt.Sprintf("listeners: [{name: pop3, address: %q}]\nupstream: {address: %q}\naudit: {output: %q}\nadmin: {address: %q}\n",
		addr, drop, t.TempDir()+"/audit.jsonl", admin))
	startBinary(t, bin, cfg, addr)

	ok := pop3test.Dial(t, addr)
	ok.Login("u", "p")
	ok.Cmd("RETR 1", "+OK*")
	ok.Body()
	ok.Cmd("DELE 1", "+OK*")
	ok.Cmd("QUIT", "+OK*")
	refused := pop3test.Dial(t, addr)
	refused.Cmd("USER u", "+OK*")
	refused.Cmd("PASS wrong", "-ERR*")
	refused.Cmd("RETR 1", "-ERR*")
	refused.Cmd("QUIT", "+OK*")

	var body string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		if strings.Contains(body, `popproxy_session_closes_total{reason="quit"} 2`) || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{
		`popproxy_sessions_total{listener="pop3",tls="none"} 3`, // startBinary probes once
		`popproxy_sessions_open{listener="pop3",tls="none"} 0`,
		`popproxy_logins_total{reason="none",result="ok"} 1`,
		`popproxy_logins_total{reason="auth",result="failed"} 1`,
		`popproxy_commands_total{result="ok",verb="RETR"} 1`,
		`popproxy_commands_total{result="ok",verb="DELE"} 1`,
		`popproxy_policy_refusals_total{rule="wrong_state"} 1`,
		`popproxy_session_closes_total{reason="quit"} 2`,
		`popproxy_upstream_dial_seconds_count 2`,
		`popproxy_upstream_circuit_open{address="` + drop + `",upstream="default"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := http.Get("http://" + admin + path)
		if err != nil || resp.StatusCode != want {
			t.Errorf("%s: %v %v", path, resp, err)
		}
	}
}
