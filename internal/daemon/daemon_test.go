package daemon

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/testproc"
)

// testConfig is a configuration with one listener on a free loopback port,
// an upstream that is never dialled, and the audit trail in a temporary file.
func testConfig(t *testing.T) string {
	t.Helper()
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	return testproc.WriteConfig(t, "listeners: [{name: pop3, address: 127.0.0.1:0}]\n"+
		"upstream: {address: 127.0.0.1:2}\naudit: {output: "+audit+"}\ntimeouts: {shutdown_grace: 1s}\n")
}

// TestRunAndReload: New binds the listener, which greets once Run serves;
// Reload applies the file again; cancelling Run's context shuts down and
// returns nil, after which the listener is closed.
func TestRunAndReload(t *testing.T) {
	path := testConfig(t)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var log testproc.SyncBuffer
	d, err := New(cfg, Options{ConfigPath: path, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	addr := d.Addrs()[0].String()
	if !strings.Contains(log.String(), "msg=listening listener=pop3 address="+addr) {
		t.Errorf("New did not log its listener:\n%s", log.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go runDaemon(ctx, d, done)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(line, "+OK") {
		t.Fatalf("greeting %q, %v", line, err)
	}
	c.Close()

	d.Reload()
	if !strings.Contains(log.String(), "reload: limits and routes applied") {
		t.Errorf("Reload did not apply the file:\n%s", log.String())
	}
	if err := os.WriteFile(path, []byte("listeners: [}"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Reload()
	if !strings.Contains(log.String(), "reload: configuration refused") {
		t.Errorf("Reload took a broken file:\n%s", log.String())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("listener still accepts after Run returned")
	}
}

// TestNewFailsClean: a listener that cannot be bound fails New with its
// name, and leaves no listener open.
func TestNewFailsClean(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	cfg, err := config.Parse([]byte("listeners: [{name: first, address: " + freeAddr + "}, {name: second, address: " +
		busy.Addr().String() + "}]\nupstream: {address: 127.0.0.1:2}\naudit: {output: " +
		filepath.Join(t.TempDir(), "audit.jsonl") + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.HasPrefix(err.Error(), "listener second: ") {
		t.Fatalf("New: %v, want listener second: ...", err)
	}
	l, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Fatalf("the first listener was left open: %v", err)
	}
	l.Close()
}

// TestStopNow: after Run's context is cancelled, StopNow ends the wait for
// an open session before the grace period.
func TestStopNow(t *testing.T) {
	path := testConfig(t)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeouts.ShutdownGrace = time.Minute
	var log testproc.SyncBuffer
	d, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go runDaemon(ctx, d, done)
	c, err := net.Dial("tcp", d.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); !strings.HasPrefix(line, "+OK") {
		t.Fatalf("greeting %q, %v", line, err)
	}
	cancel()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), "waiting up to 1m0s for 1 session"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no wait for the open session:\n%s", log.String())
		}
	}
	d.StopNow(os.Interrupt)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("StopNow did not end the grace period")
	}
	if !strings.Contains(log.String(), "stopping every session now") {
		t.Errorf("log:\n%s", log.String())
	}
}
