package proxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/proxy"
)

// TestUpstreamSTLSNeverFallsBack plays upstreams that do not offer STLS,
// refuse it, or inject data after accepting it: each time the client gets
// -ERR [SYS/TEMP] and no credential leaves the proxy (D2.9, D2.10).
func TestUpstreamSTLSNeverFallsBack(t *testing.T) {
	tests := []struct {
		name string
		capa string // answer to CAPA
		stls string // answer to STLS
	}{
		{"no STLS in CAPA", "+OK\r\nUSER\r\nTOP\r\n.\r\n", ""},
		{"no CAPA", "-ERR unknown command\r\n", ""},
		{"STLS refused", "+OK\r\nSTLS\r\n.\r\n", "-ERR not today\r\n"},
		{"response injection", "+OK\r\nSTLS\r\n.\r\n", "+OK begin\r\n+OK injected\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var received []string
			up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
				c.Send("+OK legacy ready\r\n")
				for {
					line := c.Line()
					if line == "" {
						return
					}
					mu.Lock()
					received = append(received, line)
					mu.Unlock()
					switch line {
					case "CAPA":
						c.Send(tt.capa)
					case "STLS":
						c.Send(tt.stls)
					default:
						c.Send("+OK\r\n")
					}
				}
			})
			addr, _, rec := startProxy(t, up, func(o *proxy.Options) {
				withUpstream(o, func(u *proxy.Upstream) { u.TLSMode = proxy.TLSStartTLS; u.TLSConfig = clientTLS(t) })
			})
			c := pop3test.Dial(t, addr)
			c.Cmd("USER alice", "+OK*")
			c.Cmd("PASS secret", "-ERR [SYS/TEMP] *")
			mu.Lock()
			defer mu.Unlock()
			for _, line := range received {
				if strings.HasPrefix(line, "USER") || strings.HasPrefix(line, "PASS") || strings.HasPrefix(line, "AUTH") {
					t.Errorf("credentials sent upstream: %q", received)
				}
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.auths) != 1 || rec.auths[0].Code != "SYS/TEMP" {
				t.Errorf("auth events %+v", rec.auths)
			}
		})
	}
}

// TestUpstreamSTLSForgetsPlaintextOffers: behind upstream STLS only CAPA
// under TLS decides whether XCLIENT and XPOPPROXY are sent and whether the
// upstream is this proxy (a loop). The greeting and the CAPA before STLS,
// which a man in the middle could have written, count for nothing (D2.12).
// The upstream greets as this very proxy, offering XCLIENT, in plaintext.
func TestUpstreamSTLSForgetsPlaintextOffers(t *testing.T) {
	tests := []struct {
		name               string
		plainCapa, tlsCapa string   // ID stands for the proxy's instance id
		want               []string // commands received under TLS
		ok                 bool
	}{
		{"offered in plaintext only", "XCLIENT\r\nXPOPPROXY ID\r\n", "USER\r\n",
			[]string{"CAPA", "USER alice", "PASS secret", "QUIT"}, true},
		{"offered under TLS", "", "XCLIENT\r\nXPOPPROXY 0123456789abcdef\r\n",
			[]string{"CAPA", "XCLIENT ADDR=127.0.0.1 PORT=* SESSION=* TTL=4", "XPOPPROXY ID", "USER alice", "PASS secret", "QUIT"}, true},
		{"a loop under TLS", "", "XPOPPROXY ID\r\n", []string{"CAPA"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var id atomic.Value // the proxy's, from its greeting
			var mu sync.Mutex
			var underTLS []string
			up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
				own := id.Load().(string)
				c.Send("+OK [XCLIENT] popproxy ready " + own + "\r\n")
				secure := false
				for {
					line := c.Line()
					switch {
					case line == "":
						return
					case secure:
						mu.Lock()
						underTLS = append(underTLS, line)
						mu.Unlock()
					}
					switch line {
					case "CAPA":
						caps := map[bool]string{false: "STLS\r\n" + tt.plainCapa, true: tt.tlsCapa}[secure]
						c.Send("+OK\r\n" + strings.ReplaceAll(caps, "ID", own) + ".\r\n")
					case "STLS":
						c.Send("+OK begin TLS\r\n")
						tc := tls.Server(c.Conn, serverTLS(t))
						if tc.Handshake() != nil {
							return
						}
						c.Conn, c.R, secure = tc, bufio.NewReader(tc), true
					default:
						c.Send("+OK\r\n")
					}
				}
			})
			addr, _, _ := startProxy(t, up, func(o *proxy.Options) {
				withUpstream(o, func(u *proxy.Upstream) {
					u.TLSMode = proxy.TLSStartTLS
					u.TLSConfig = clientTLS(t)
					u.SendClient = proxy.SendXClient
				})
			})
			c := pop3test.Dial(t, addr)
			c.Cmd("CAPA", "+OK*")
			for _, line := range strings.Split(c.Body(), "\r\n") {
				if own, ok := strings.CutPrefix(line, "XPOPPROXY "); ok {
					id.Store(own)
				}
			}
			if id.Load() == nil {
				t.Fatal("the proxy's CAPA lists no XPOPPROXY <id>")
			}
			c.Cmd("USER alice", "+OK*")
			if tt.ok {
				c.Cmd("PASS secret", "+OK*")
				c.Cmd("QUIT", "+OK*")
			} else {
				c.Cmd("PASS secret", "-ERR [SYS/TEMP] *")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(underTLS) != len(tt.want) {
				t.Fatalf("received under TLS %q, want %q", underTLS, tt.want)
			}
			for i, want := range tt.want {
				if want = strings.ReplaceAll(want, "ID", id.Load().(string)); !pop3test.Match(want, underTLS[i]) {
					t.Errorf("command %d under TLS %q, want %q", i, underTLS[i], want)
				}
			}
		})
	}
}

// tlsDovecot is a private Dovecot with TLS on both its ports, its certificate
// the test CA.
func tlsDovecot(t *testing.T) *testdovecot.Instance {
	t.Helper()
	cert := loadTestCert(t)
	d := testdovecot.New(t, testdovecot.Config{
		Users:   map[string]string{"tls": "pw-tls"},
		TLSCert: cert.certFile, TLSKey: cert.keyFile,
	})
	for _, m := range corpus {
		if _, err := d.AddMessage("tls", m); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// TestDovecotUpstreamTLS logs in to a real Dovecot over implicit TLS and over
// STLS, verifying its certificate against the test CA; a wrong server name
// is refused.
func TestDovecotUpstreamTLS(t *testing.T) {
	d := tlsDovecot(t)
	direct := fetchAllAs(t, d.Addr(), "tls", "pw-tls")
	for _, tt := range []struct {
		mode proxy.TLSMode
		addr string
	}{{proxy.TLSImplicit, d.TLSAddr()}, {proxy.TLSStartTLS, d.Addr()}} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			addr, _, _ := startProxy(t, tt.addr, func(o *proxy.Options) {
				withUpstream(o, func(u *proxy.Upstream) { u.TLSMode = tt.mode; u.TLSConfig = clientTLS(t) })
			})
			if got := fetchAllAs(t, addr, "tls", "pw-tls"); strings.Join(got, "") != strings.Join(direct, "") {
				t.Error("responses over upstream TLS differ from direct ones")
			}
			wrongName := clientTLS(t)
			wrongName.ServerName = "mail.example.test"
			addr, _, rec := startProxy(t, tt.addr, func(o *proxy.Options) {
				withUpstream(o, func(u *proxy.Upstream) { u.TLSMode = tt.mode; u.TLSConfig = wrongName })
			})
			c := pop3test.Dial(t, addr)
			c.Cmd("USER tls", "+OK*")
			c.Cmd("PASS pw-tls", "-ERR [SYS/TEMP] *")
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.auths) != 1 || !strings.Contains(rec.auths[0].Reason, "certificate") {
				t.Errorf("auth events %+v", rec.auths)
			}
		})
	}
}

// TestTLSRealClients runs curl, openssl s_client and Python's poplib against
// popproxy's STLS and implicit-TLS listeners in front of a real Dovecot and
// compares what they fetch with what they fetch from Dovecot's own TLS.
func TestTLSRealClients(t *testing.T) {
	d := tlsDovecot(t)
	cert := loadTestCert(t)
	for _, tool := range []string{"curl", "openssl", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run .ci/install-test-tools", tool)
		}
	}
	stls, _, _ := startListener(t, d.Addr(), proxy.Listener{Name: "pop3", TLSMode: proxy.TLSStartTLS, TLSConfig: serverTLS(t), RequireTLS: true}, nil)
	implicit, _, _ := startListener(t, d.Addr(), proxy.Listener{Name: "pop3s", TLSMode: proxy.TLSImplicit, TLSConfig: serverTLS(t)}, nil)

	curl := func(url string, extra ...string) []byte {
		args := append([]string{"-sS", "--max-time", "20", "--cacert", cert.certFile}, extra...)
		out, err := exec.Command("curl", append(args, url)...).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", url, err)
		}
		return out
	}
	for i := 1; i <= len(corpus); i++ {
		want := curl(fmt.Sprintf("pop3s://tls:pw-tls@%s/%d", d.TLSAddr(), i))
		if got := curl(fmt.Sprintf("pop3://tls:pw-tls@%s/%d", stls, i), "--ssl-reqd"); string(got) != string(want) {
			t.Errorf("curl STLS message %d: %d bytes, want %d", i, len(got), len(want))
		}
		if got := curl(fmt.Sprintf("pop3s://tls:pw-tls@%s/%d", implicit, i)); string(got) != string(want) {
			t.Errorf("curl pop3s message %d: %d bytes, want %d", i, len(got), len(want))
		}
	}

	// openssl s_client: STLS and implicit, a scripted session each.
	for _, args := range [][]string{
		{"-starttls", "pop3", "-connect", stls},
		{"-connect", implicit, "-alpn", "pop3"},
	} {
		cmd := exec.Command("openssl", append([]string{"s_client", "-quiet", "-verify_return_error", "-CAfile", cert.certFile, "-verify_ip", "127.0.0.1"}, args...)...)
		cmd.Stdin = strings.NewReader("USER tls\r\nPASS pw-tls\r\nRETR 2\r\nQUIT\r\n")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
		if !strings.Contains(string(out), "\r\n..\r\n...\r\n..leading\r\n") || !strings.HasSuffix(string(out), "\r\n.\r\n+OK Logging out.\r\n") {
			t.Errorf("openssl %v got %q", args, out)
		}
	}

	// poplib: POP3_SSL and stls(), checked against Dovecot's own TLS.
	script := `
import hashlib, json, poplib, ssl, sys
poplib._MAXLINE = 1 << 20
ctx = ssl.create_default_context(cafile=sys.argv[1])
mode, host, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
if mode == "ssl":
    p = poplib.POP3_SSL(host, port, context=ctx, timeout=20)
else:
    p = poplib.POP3(host, port, timeout=20)
    p.stls(context=ctx)
p.user("tls"); p.pass_("pw-tls")
n = p.stat()[0]
print(json.dumps([hashlib.sha256(b"\r\n".join(p.retr(i)[1])).hexdigest() for i in range(1, n + 1)]))
p.quit()
`
	run := func(mode, hostport string) string {
		host, port, _ := strings.Cut(hostport, ":")
		out, err := exec.Command("python3", "-c", script, cert.certFile, mode, host, port).CombinedOutput()
		if err != nil {
			t.Fatalf("poplib %s %s: %v\n%s", mode, hostport, err, out)
		}
		return string(out)
	}
	want := run("ssl", d.TLSAddr())
	if got := run("ssl", implicit); got != want {
		t.Errorf("poplib POP3_SSL through popproxy: %s, want %s", got, want)
	}
	if got := run("stls", stls); got != want {
		t.Errorf("poplib stls() through popproxy: %s, want %s", got, want)
	}
}
