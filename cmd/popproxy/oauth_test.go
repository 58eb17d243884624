package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/tlsconf"
)

// TestOAuthCurl logs in with a bearer token through the popproxy binary in
// front of a real Dovecot whose oauth2 passdb asks a loopback introspection
// endpoint: curl, with OAUTHBEARER and XOAUTH2, with and without an initial
// response, retrieves a message byte for byte as it does directly. A wrong
// token gets -ERR [AUTH] (OAUTHBEARER; curl hangs up at XOAUTH2's refusal)
// and a failed login in the audit; no token appears in any output of the
// proxy: audit trail, operational log, metrics.
func TestOAuthCurl(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs dovecot and curl")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not found: run .ci/install-test-tools")
	}
	const good, wrong = "ya29.good-token-7d1e0c", "ya29.wrong-token-55aa3f"
	// Dovecot reads the certificate: a folder its users may traverse.
	dir, err := os.MkdirTemp("", "popproxy-oauth-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	certPEM, keyPEM, err := tlsconf.SelfSignedPEM("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o644)
	os.WriteFile(keyFile, keyPEM, 0o644)

	in := testdovecot.NewIntrospection(t, map[string]string{good: "alice"})
	d := testdovecot.New(t, testdovecot.Config{Users: map[string]string{"alice": "pw-alice"},
		TLSCert: certFile, TLSKey: keyFile, OAuth2IntrospectionURL: in.URL})
	msg := []byte("From: a@example.test\r\nMessage-ID: <oauth@popproxy.test>\r\nSubject: token\r\n\r\n.dot-stuffed line\r\nbody\r\n")
	if _, err := d.AddMessage("alice", msg); err != nil {
		t.Fatal(err)
	}

	// curl 7.88 takes OAUTHBEARER whenever it is offered, whatever
	// AUTH= says: a second proxy offers XOAUTH2 alone.
	bin := buildBinary(t)
	for _, mech := range []string{"OAUTHBEARER", "XOAUTH2"} {
		addr, admin := freeAddr(t), freeAddr(t)
		auditPath := filepath.Join(dir, mech+".jsonl")
		cfg := testproc.WriteConfig(t, `
listeners: [{name: pop3s, address: "`+addr+`", tls: implicit}]
tls: {certificates: [{cert_file: "`+certFile+`", key_file: "`+keyFile+`"}]}
upstream: {address: "`+d.Addr()+`", allow_plaintext_upstream: true}
auth: {mechanisms: [PLAIN, LOGIN, `+mech+`]}
audit: {output: "`+auditPath+`"}
admin: {address: "`+admin+`"}
`)
		proxy := startBinary(t, bin, cfg, addr)
		// -v shows the exchange; --sasl-ir sends the initial response with
		// AUTH, else after "+ ".
		curlOutput := func(hostport, token string, flags ...string) (stdout, verbose string, err error) {
			args := append([]string{"-v", "--max-time", "20", "--cacert", certFile, "--oauth2-bearer", token,
				"--login-options", "AUTH=" + mech}, flags...)
			cmd := exec.Command(curl, append(args, fmt.Sprintf("pop3s://alice@%s/1", hostport))...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			return string(out), stderr.String(), err
		}
		direct, _, err := curlOutput(d.TLSAddr(), good)
		if err != nil {
			t.Fatalf("curl directly: %v", err)
		}
		for _, flags := range [][]string{nil, {"--sasl-ir"}} {
			proxied, verbose, err := curlOutput(addr, good, flags...)
			if err != nil || !strings.Contains(verbose, "> AUTH "+mech) {
				t.Fatalf("curl %s %v through popproxy: %v\n%s", mech, flags, err, verbose)
			}
			if proxied != direct || proxied != string(msg) {
				t.Errorf("%s: direct %q, through popproxy %q, stored %q", mech, direct, proxied, msg)
			}
		}
		if _, verbose, err := curlOutput(addr, wrong); err == nil || mech == "OAUTHBEARER" && !strings.Contains(verbose, "< -ERR [AUTH]") {
			t.Errorf("%s, wrong token: %v\n%s", mech, err, verbose)
		}

		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// curl answers OAUTHBEARER's refusal, so the server says -ERR
		// [AUTH]; it hangs up at XOAUTH2's, whose code nobody hears.
		ok, failed := mech+" alice true <nil>", mech+" alice false AUTH"
		if mech == "XOAUTH2" {
			failed = mech + " alice false "
		}
		want := []string{ok, ok, failed}
		var auths []string
		for deadline := time.Now().Add(5 * time.Second); len(auths) < len(want) && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			auths = nil
			for _, r := range readAudit(t, auditPath) {
				if r["event"] == "auth" {
					auths = append(auths, fmt.Sprintf("%v %v %v %v", r["mechanism"], r["user"], r["ok"], r["code"]))
				}
			}
		}
		if !slices.Equal(auths, want) {
			t.Errorf("audited logins %q, want %q", auths, want)
		}
		audit, _ := os.ReadFile(auditPath)
		outputs := map[string]string{"audit trail": string(audit), "operational log": proxy.Stderr.(*testproc.SyncBuffer).String(), "metrics": string(metrics)}
		for name, text := range outputs {
			for _, token := range []string{good, wrong} {
				if strings.Contains(text, token) {
					t.Errorf("the token %s is in the %s:\n%s", token, name, text)
				}
			}
		}
	}
}
