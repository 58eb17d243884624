package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/popproxy/popproxy/audit"
	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/tlsconf"
)

// readAudit parses an audit file into records.
func readAudit(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var records []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		records = append(records, r)
	}
	return records
}

// TestAuditEndToEnd runs fetchmail and a hand-driven client through the
// popproxy binary in front of a real Dovecot and checks the audit trail: the
// RETRs with their Message-IDs, sizes and UIDLs, deletions committed by QUIT
// and not by a dropped connection, an intact hash chain, and no credential.
func TestAuditEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs dovecot and fetchmail")
	}
	fetchmail, err := exec.LookPath("fetchmail")
	if err != nil {
		t.Fatal("fetchmail not found: run .ci/install-test-tools")
	}
	bin := buildBinary(t)
	d := testdovecot.New(t, testdovecot.Config{Users: map[string]string{"fm": "pw-fm-secret", "keep": "pw-keep-secret"}})
	type sent struct {
		uidl, messageID string
		size            int
	}
	var fmMessages []sent
	for i := range 3 {
		id := fmt.Sprintf("<msg%d.e2e@popproxy.test>", i)
		body := fmt.Sprintf("From: a@example.test\r\nMessage-ID: %s\r\nSubject: %d\r\n\r\n%s\r\n", id, i, strings.Repeat("line\r\n", 100*(i+1)))
		uidl, err := d.AddMessage("fm", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		fmMessages = append(fmMessages, sent{uidl, id, len(body)})
	}
	if _, err := d.AddMessage("keep", []byte("Message-ID: <keep@test>\r\n\r\nkeep me\r\n")); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	addr := freeAddr(t)
	auditPath := filepath.Join(dir, "audit.jsonl")
	certPEM, keyPEM, err := tlsconf.SelfSignedPEM("localhost")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	// STLS offered, not required, so the hand-driven client below may stay
	// in plaintext while fetchmail upgrades.
	cfg := testproc.WriteConfig(t, `
listeners: [{name: pop3, address: "`+addr+`", tls: starttls, require_tls: false}]
tls: {certificates: [{cert_file: "`+certFile+`", key_file: "`+keyFile+`"}]}
upstream: {address: "`+d.Addr()+`", allow_plaintext_upstream: true}
audit: {output: "`+auditPath+`", chain: true, resolve_uids: true}
`)
	proxy := startBinary(t, bin, cfg, addr)

	// fetchmail upgrades with STLS, checks the certificate, retrieves
	// everything and deletes it: DELE + QUIT.
	host, port, _ := net.SplitHostPort(addr)
	rc := filepath.Join(dir, "fetchmailrc")
	os.WriteFile(rc, []byte(fmt.Sprintf("set no syslog\npoll localhost via %s service %s protocol pop3 user \"fm\" password \"pw-fm-secret\" is \"root\" here "+
		"sslproto tls1.2+ sslcertck sslcertfile \"%s\" sslcommonname localhost mda \"/bin/cat >/dev/null\"\n", host, port, certFile)), 0o600)
	fm := exec.Command(fetchmail, "-f", rc, "--pidfile", filepath.Join(dir, "pid"), "--nosyslog")
	fm.Env = append(os.Environ(), "HOME="+dir)
	if out, err := fm.CombinedOutput(); err != nil {
		t.Fatalf("fetchmail: %v\n%s", err, out)
	}

	// A client logs in with AUTH PLAIN, marks a message and vanishes.
	plain := base64.StdEncoding.EncodeToString([]byte("\x00keep\x00pw-keep-secret"))
	keep := pop3test.Dial(t, addr)
	keep.Cmd("AUTH PLAIN "+plain, "+OK*")
	keep.Cmd("DELE 1", "+OK*")
	keep.Conn.Close()

	time.Sleep(200 * time.Millisecond) // let the dropped session's close record land
	proxy.Process.Signal(syscall.SIGTERM)
	proxy.Wait()

	if left, _ := d.Messages("fm"); len(left) != 0 {
		t.Errorf("fetchmail's deletions not committed: %v", left)
	}
	if left, _ := d.Messages("keep"); len(left) != 1 {
		t.Errorf("the dropped session's DELE was committed: %v", left)
	}

	data, _ := os.ReadFile(auditPath)
	for _, secret := range []string{"pw-fm-secret", "pw-keep-secret", plain,
		base64.StdEncoding.EncodeToString([]byte("pw-fm-secret")), base64.StdEncoding.EncodeToString([]byte("pw-keep-secret"))} {
		if strings.Contains(string(data), secret) {
			t.Errorf("audit log contains the credential %q", secret)
		}
	}
	f, _ := os.Open(auditPath)
	defer f.Close()
	if n, err := audit.Verify(f); err != nil || n == 0 {
		t.Errorf("audit chain: %d records, %v", n, err)
	}

	records := readAudit(t, auditPath)
	sessions := map[string]string{} // session id -> user
	var retrs []map[string]any
	closes := map[string]map[string]any{}
	for _, r := range records {
		id, _ := r["session"].(string)
		switch r["event"] {
		case "auth":
			if r["ok"] == true {
				sessions[id] = r["user"].(string)
			}
		case "command":
			// fetchmail retrieves with TOP n <huge> so as not to mark messages seen.
			if r["verb"] == "RETR" || r["verb"] == "TOP" {
				retrs = append(retrs, r)
			}
		case "session.close":
			closes[sessions[id]] = r
		}
		if r["client"] == nil || r["listener"] != "pop3" {
			t.Errorf("record without client or listener: %v", r)
		}
	}
	if len(retrs) != len(fmMessages) {
		t.Fatalf("%d RETR/TOP records, want %d", len(retrs), len(fmMessages))
	}
	for i, m := range fmMessages {
		r := retrs[i]
		if r["message_id"] != m.messageID || r["uidl"] != m.uidl || r["size"] != float64(m.size) || r["ok"] != true {
			t.Errorf("retrieval record %d = %v, want message_id %s uidl %s size %d", i, r, m.messageID, m.uidl, m.size)
		}
	}
	if c := closes["fm"]; c == nil || c["committed"] != true || c["marked"] != "1-3" || c["retr"].(float64)+c["top"].(float64) != 3 {
		t.Errorf("fetchmail session close = %v", closes["fm"])
	}
	if c := closes["keep"]; c == nil || c["committed"] != false || c["marked"] != "1" {
		t.Errorf("dropped session close = %v", closes["keep"])
	}
}

// TestAuditFailClosed makes the audit file unwritable under a running
// popproxy (its path re-pointed at /dev/full, then SIGHUP): new sessions are
// refused with -ERR [SYS/TEMP] and the operational log says why; once the
// path is writable again, sessions are served again.
func TestAuditFailClosed(t *testing.T) {
	bin := buildBinary(t)
	d := testdovecot.New(t, testdovecot.Config{Users: map[string]string{"u": "p"}})
	dir := t.TempDir()
	addr := freeAddr(t)
	link := filepath.Join(dir, "audit.jsonl")
	if err := os.Symlink(filepath.Join(dir, "real.jsonl"), link); err != nil {
		t.Fatal(err)
	}
	cfg := testproc.WriteConfig(t, `
listeners: [{name: pop3, address: "`+addr+`"}]
upstream: {address: "`+d.Addr()+`"}
audit: {output: "`+link+`"}
`)
	proxy := startBinary(t, bin, cfg, addr)
	greeting := func() string {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return pop3test.NewClient(t, conn).Line()
	}
	repoint := func(target string) {
		t.Helper()
		os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		proxy.Process.Signal(syscall.SIGHUP)
		time.Sleep(300 * time.Millisecond)
	}
	if g := greeting(); !strings.HasPrefix(g, "+OK popproxy ready ") {
		t.Fatalf("greeting %q", g)
	}
	repoint("/dev/full")
	if g := greeting(); g != "-ERR [SYS/TEMP] service temporarily unavailable" {
		t.Fatalf("with the audit sink failing, greeting %q", g)
	}
	logged := func() bool {
		log := proxy.Stderr.(*testproc.SyncBuffer).String()
		return strings.Contains(log, "audit") && strings.Contains(log, "no space left on device")
	}
	for deadline := time.Now().Add(3 * time.Second); !logged(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("operational log does not report the audit failure:\n%s", proxy.Stderr)
		}
	}
	repoint(filepath.Join(dir, "after.jsonl"))
	// The next session's open record is written, which clears the failure.
	if g := greeting(); !strings.HasPrefix(g, "+OK popproxy ready ") {
		t.Fatalf("after recovery, greeting %q", g)
	}
}
