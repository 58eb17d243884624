package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/audit"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/proxy"
)

// runAudit runs `popproxy audit args...` in process.
func runAudit(args ...string) (int, string, string) {
	var stdout, stderr strings.Builder
	code := cli(append([]string{"audit"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// rotatedLogs writes a chained audit log across three files as logrotate
// leaves it with compress: the oldest gzipped. It returns their paths, oldest
// first.
func rotatedLogs(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := audit.OpenFile(path, audit.Options{Chain: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	session := func(user string, marked ...int) {
		l.Auth("s-"+user, proxy.AuthEvent{User: user, Mechanism: "USER", OK: true})
		l.SessionClose("s-"+user, proxy.CloseEvent{User: user, LoggedIn: true, Committed: len(marked) > 0,
			Counters: proxy.Counters{Retr: 2, BytesOut: 900, Dele: len(marked), Marked: marked}})
	}
	session("alice", 1, 2, 3)
	os.Rename(path, path+".2")
	l.Reopen()
	session("bob")
	session("alice", 7)
	os.Rename(path, path+".1")
	l.Reopen()
	session("carol")
	l.Close()

	data, err := os.ReadFile(path + ".2")
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	os.WriteFile(path+".2.gz", gz.Bytes(), 0o600)
	os.Remove(path + ".2")
	return []string{path + ".2.gz", path + ".1", path}
}

func TestAuditVerify(t *testing.T) {
	files := rotatedLogs(t)
	code, out, errs := runAudit(append([]string{"verify"}, files...)...)
	if code != 0 || errs != "" || !strings.HasPrefix(out, files[0]+": 2 records, seq 1 to 2\n"+
		files[1]+": 4 records, seq 3 to 6\n"+files[2]+": 2 records, seq 7 to 8\nchain intact; last seq 8, hash ") {
		t.Errorf("verify of rotated files: %d\n%s%s", code, out, errs)
	}
	code, out, _ = runAudit("verify", files[1], files[2])
	if code != 0 || !strings.HasPrefix(out, files[1]+": continues from seq 3, link not checked\n") {
		t.Errorf("verify of files that continue a chain: %d\n%s", code, out)
	}
	code, out, _ = runAudit("verify", files[0], files[2])
	if code != 1 || !strings.Contains(out, files[2]+": line 1: seq 7 after seq 2 (end of "+files[0]+"): 4 record(s) missing") ||
		!strings.HasSuffix(out, "chain broken: 1 bad line(s)\n") {
		t.Errorf("verify with a file left out: %d\n%s", code, out)
	}

	data, _ := os.ReadFile(files[1])
	edited := strings.Replace(string(data), `"user":"bob"`, `"user":"b0b"`, 1)
	edited = strings.Replace(edited, `"user":"alice"`, `"user":"mallory"`, 1)
	os.WriteFile(files[1], []byte(edited), 0o600)
	code, out, _ = runAudit("verify", files[1])
	if code != 1 || !strings.Contains(out, files[1]+": line 1: record edited") || !strings.Contains(out, files[1]+": line 3: record edited") ||
		!strings.Contains(out, "chain broken: 2 bad line(s)") {
		t.Errorf("verify of an edited file: %d\n%s", code, out)
	}
	code, out, _ = runAudit("verify", "-max", "1", files[1])
	if code != 1 || strings.Contains(out, "line 3") || !strings.Contains(out, "chain broken: 2 bad line(s); 1 not shown (see -max)") {
		t.Errorf("verify -max 1: %d\n%s", code, out)
	}
	if code, out, errs := runAudit("verify", files[0]+".missing"); code != 1 || !strings.Contains(errs, "no such file") ||
		!strings.Contains(out, "chain not verified: 1 file(s) could not be read") {
		t.Errorf("verify of a missing file: %d %q %q", code, out, errs)
	}
}

func TestAuditReport(t *testing.T) {
	files := rotatedLogs(t)
	code, out, _ := runAudit(append([]string{"report"}, files...)...)
	// alice: 2 sessions, 4 messages deleted, across the gzipped and the plain files.
	if code != 0 || !strings.HasPrefix(out, "USER ") || !regexpMatch(`\nalice +2 +0 +4 +0 +4 `, out) || !strings.Contains(out, "\ncarol ") {
		t.Errorf("report: %d\n%s", code, out)
	}
}

func regexpMatch(pattern, s string) bool {
	return regexp.MustCompile(pattern).MatchString(s)
}

func TestAuditUsage(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"verify", "-h"}, {"report", "-help"}} {
		if code, out, errs := runAudit(args...); code != 0 || !strings.HasPrefix(out, "usage:") || errs != "" {
			t.Errorf("%q: %d %q %q", args, code, out, errs)
		}
	}
	for _, args := range [][]string{{"verify"}, {"report"}, {"verify", "-max", "0", "f"}, {"verify", "-x", "f"}, {"report", "-max", "1", "f"}} {
		if code, _, errs := runAudit(args...); code != 2 || !strings.HasPrefix(errs, "popproxy: ") || !strings.Contains(errs, "usage:") {
			t.Errorf("%q: %d %q", args, code, errs)
		}
	}
}

// TestAuditVerifyStdin runs the binary as an admin would, on a compressed
// rotated file piped to standard input.
func TestAuditVerifyStdin(t *testing.T) {
	bin := buildBinary(t)
	files := rotatedLogs(t)
	gz, _ := os.ReadFile(files[0])
	cmd := exec.Command(bin, "audit", "verify", "-")
	cmd.Stdin = bytes.NewReader(gz)
	out, err := cmd.Output()
	if err != nil || !strings.HasPrefix(string(out), "-: 2 records, seq 1 to 2\nchain intact; last seq 2, hash ") {
		t.Errorf("verify - < %s: %v\n%s", files[0], err, out)
	}
	cmd = exec.Command(bin, "audit", "verify", files[1], "-", files[2])
	cmd.Stdin = strings.NewReader("not a record\n")
	out, err = cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "-: line 1: not a JSON record\n") {
		t.Errorf("verify with a bad stdin: %v\n%s", err, out)
	}
}

// TestFailedStartShowsTheError runs popproxy with a listener whose port is
// taken: the audit log was opened, but its closing must not come before the
// error the admin needs to read.
func TestFailedStartShowsTheError(t *testing.T) {
	bin := buildBinary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg := testproc.WriteConfig(t, "listeners: [{name: pop3, address: "+busy.Addr().String()+"}]\nupstream: {address: 127.0.0.1:9}\n"+
		"audit: {output: "+auditPath+", chain: true}\n")
	out, err := exec.Command(bin, "-config", cfg).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "address already in use") ||
		strings.Contains(string(out), "audit log closed") {
		t.Errorf("failed start: %v\n%s", err, out)
	}
}

// TestChainHeadLogged runs popproxy with a chained audit file and checks that
// the chain's head reaches the operational log at the checkpoint interval.
func TestChainHeadLogged(t *testing.T) {
	bin := buildBinary(t)
	drop := startDrop(t, map[string]string{"u": "p"})
	addr := freeAddr(t)
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg := testproc.WriteConfig(t, "listeners: [{name: pop3, address: "+addr+"}]\nupstream: {address: "+drop+"}\n"+
		"audit: {output: "+auditPath+", chain: true, checkpoint: 100ms}\n")
	cmd := startBinary(t, bin, cfg, addr) // its probe connection is a session
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var v audit.Verifier
		f, _ := os.Open(auditPath)
		res, _ := v.File(auditPath, f)
		f.Close()
		head := fmt.Sprintf(`"sink":"%s","seq":%d,"last_hash":"%s",`, auditPath, res.Seq, res.Hash)
		for line := range strings.Lines(cmd.Stderr.(*testproc.SyncBuffer).String()) {
			if res.Records > 0 && strings.Contains(line, head) && strings.Contains(line, `"message":"audit chain head"`) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("operational log lacks the head %s:\n%s", head, cmd.Stderr)
		}
	}
}
