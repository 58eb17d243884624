package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/popproxy/popproxy/audit"
	"github.com/popproxy/popproxy/proxy"
)

func TestAuditCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.OpenFile(path, audit.Options{Chain: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l.Auth("s1", proxy.AuthEvent{User: "alice", Mechanism: "USER", OK: false, Code: "AUTH"})
	l.Auth("s1", proxy.AuthEvent{User: "alice", Mechanism: "USER", OK: true})
	l.SessionClose("s1", proxy.CloseEvent{User: "alice", LoggedIn: true, Counters: proxy.Counters{Retr: 2, BytesOut: 900}})
	l.Close()

	run := func(args ...string) (int, string, string) {
		var stdout, stderr strings.Builder
		code := auditCommand(args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	if code, out, errs := run("verify", path); code != 0 || out != path+": 3 records, chain intact\n" || errs != "" {
		t.Errorf("verify: %d %q %q", code, out, errs)
	}
	code, out, _ := run("report", path)
	if code != 0 || !strings.HasPrefix(out, "USER ") || !strings.Contains(out, "\nalice  ") {
		t.Errorf("report: %d\n%s", code, out)
	}

	data, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(data), "alice", "al1ce", 1)), 0o600)
	if code, out, _ := run("verify", path); code != 1 || !strings.HasPrefix(out, path+": line 1: record edited") {
		t.Errorf("verify of an edited file: %d %q", code, out)
	}

	if code, _, errs := run("verify", path+".missing"); code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("verify of a missing file: %d %q", code, errs)
	}
	for _, args := range [][]string{nil, {"verify"}, {"check", path}, {"verify", path, path}} {
		if code, _, errs := run(args...); code != 2 || !strings.HasPrefix(errs, "usage:") {
			t.Errorf("%q: %d %q", args, code, errs)
		}
	}
}
